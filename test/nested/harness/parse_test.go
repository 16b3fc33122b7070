package harness

import (
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

func TestParseKernelPackage(t *testing.T) {
	tests := []struct {
		name, out, pkg, version string
		ok                      bool
	}{
		{"apt-cache show", "Package: linux-image-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n",
			"linux-image-6.1.0-56-amd64", "6.1.192-2", true},
		{"apt-cache depends", "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n",
			"linux-image-6.1.0-56-amd64", "", true},
		{"alternatives", "Depends: linux-image-6.12.9+deb13-amd64 (= 6.12.9-1), foo\n",
			"linux-image-6.12.9+deb13-amd64", "6.12.9-1", true},
		{"virtual only", "Depends: linux-image-amd64-signed\n", "", "", false},
		{"empty", "", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkg, v, ok := ParseKernelPackage(tt.out)
			if pkg != tt.pkg || v != tt.version || ok != tt.ok {
				t.Errorf("got %q %q %v, want %q %q %v", pkg, v, ok, tt.pkg, tt.version, tt.ok)
			}
		})
	}
}

func TestParseAptVersion(t *testing.T) {
	tests := []struct {
		out, want string
		ok        bool
	}{
		{"Package: x\nVersion: 1:7.2+dfsg-7\nVersion: 0\n", "1:7.2+dfsg-7", true},
		{"Package: x\n", "", false},
		{"Version:   \n", "", false},
	}
	for _, tt := range tests {
		got, ok := ParseAptVersion(tt.out)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseAptVersion(%q) = %q, %v; want %q, %v", tt.out, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f71)\n" +
		"\tlibmissing.so => not found\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f71d178a000)\n"
	want := []string{"/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2"}
	if got := ParseLdd(out); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseLdd = %v, want %v", got, want)
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/assets/vmlinuz", "/assets/vmlinuz"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"", "''"},
		{"$HOME", "'$HOME'"},
	}
	for _, tt := range tests {
		if got := ShellQuote(tt.in); got != tt.want {
			t.Errorf("ShellQuote(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestInitScripts checks the generated /init scripts parse as shell and carry
// the markers and paths the harness and the tests rely on.
func TestInitScripts(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   []string
	}{
		{"host", HostInit(), []string{StartMarker, ExitMarker + "$code", ModulesListPath, PayloadPath, EnvPath,
			"export GODWIT_KERNEL=" + GuestKernelPath, "export GODWIT_INITRD=" + GuestInitrdPath,
			"export GODWIT_BIN=" + GodwitBinPath, "ip link set lo up", "poweroff -f",
			"echo 1 > /proc/sys/kernel/sysrq"}},
		{"guest", GuestInit([]string{"/lib/modules/x/virtio.ko"}), []string{GuestReadyMarker + " cpus=$(nproc)",
			"insmod /lib/modules/x/virtio.ko", `godwit\.cmd=`, "reboot -f"}},
	}
	sh, shErr := exec.LookPath("sh")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.HasPrefix(tt.script, "#!/bin/sh\n") {
				t.Error("missing #!/bin/sh")
			}
			for _, w := range tt.want {
				if !strings.Contains(tt.script, w) {
					t.Errorf("script lacks %q", w)
				}
			}
			if shErr != nil {
				return
			}
			cmd := exec.Command(sh, "-n")
			cmd.Stdin = strings.NewReader(tt.script)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("sh -n: %v: %s", err, out)
			}
		})
	}
}

// TestGuestCmdExtraction runs the guest init's godwit.cmd extraction (its
// sed expressions) against sample kernel command lines.
func TestGuestCmdExtraction(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	var lines []string
	for _, l := range strings.Split(GuestInit(nil), "\n") {
		if strings.HasPrefix(l, "cmd=") || strings.HasPrefix(l, "[ -n \"$cmd\" ] ||") {
			lines = append(lines, strings.ReplaceAll(l, "/proc/cmdline", "\"$CMDLINE_FILE\""))
		}
	}
	if len(lines) != 2 {
		t.Fatalf("found %d extraction lines in the guest init, want 2", len(lines))
	}
	script := strings.Join(lines, "\n") + "\nprintf '%s' \"$cmd\"\n"
	tests := []struct{ cmdline, want string }{
		{`console=ttyS0 reboot=k panic=-1`, ""},
		{`console=ttyS0 godwit.cmd="echo hi; cat /proc/cpuinfo" reboot=k`, "echo hi; cat /proc/cpuinfo"},
		{`godwit.cmd=poweroff panic=-1`, "poweroff"},
		{`reboot=k godwit.cmd=ls`, "ls"},
	}
	for _, tt := range tests {
		t.Run(tt.cmdline, func(t *testing.T) {
			f := t.TempDir() + "/cmdline"
			if err := writeFile(f, tt.cmdline+"\n"); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sh, "-c", script)
			cmd.Env = []string{"CMDLINE_FILE=" + f, "PATH=/usr/bin:/bin"}
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Errorf("cmd = %q, want %q", out, tt.want)
			}
		})
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

func TestCPUHasVirt(t *testing.T) {
	tests := []struct {
		name, cpuinfo string
		want          bool
	}{
		{"intel", "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n", true},
		{"amd", "processor\t: 0\nflags\t\t: fpu svm npt\n", true},
		{"none", "processor\t: 0\nflags\t\t: fpu vme hypervisor\nbugs\t\t: svm_like\n", false},
		{"substring only", "flags\t\t: vmxfake svmx\n", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CPUHasVirt(tt.cpuinfo); got != tt.want {
				t.Errorf("CPUHasVirt = %v, want %v", got, tt.want)
			}
		})
	}
}
