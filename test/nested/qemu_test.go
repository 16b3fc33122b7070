package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit/test/nested/harness"
)

func TestWriteInitrd(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.cpio")
	f, err := os.Create(base)
	if err != nil {
		t.Fatal(err)
	}
	w := harness.NewCPIOWriter(f)
	if err := w.Bytes("/init", 0o755, []byte("#!/bin/sh\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	hostFile := filepath.Join(dir, "tool")
	if err := os.WriteFile(hostFile, []byte("#!/bin/sh\necho tool\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", "a.txt"), []byte("A"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		o       options
		want    map[string]string // archive name -> content
		wantErr string
	}{
		{
			name: "payload, env, file and tree",
			o: options{
				run:  "/bin/tool -v",
				envs: listFlag{"A=1", "B=x y"},
				adds: listFlag{hostFile + ":/bin/tool", tree + ":/data"},
			},
			want: map[string]string{
				"init":           "#!/bin/sh\n",
				"payload.sh":     "#!/bin/sh\n/bin/tool -v\n",
				"etc/godwit/env": "export A=1\nexport B='x y'\n",
				"bin/tool":       "#!/bin/sh\necho tool\n",
				"data/sub/a.txt": "A",
			},
		},
		{name: "add without guest path", o: options{run: "true", adds: listFlag{hostFile}}, wantErr: "HOSTPATH:/GUESTPATH"},
		{name: "relative guest path", o: options{run: "true", adds: listFlag{hostFile + ":bin/x"}}, wantErr: "HOSTPATH:/GUESTPATH"},
		{name: "missing host file", o: options{run: "true", adds: listFlag{dir + "/nope:/x"}}, wantErr: "no such file"},
		{name: "bad env", o: options{run: "true", envs: listFlag{"NOEQUALS"}}, wantErr: "KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "initrd")
			err := writeInitrd(out, &tt.o, base, "")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			entries, err := harness.ReadCPIO(b)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, e := range entries {
				if e.Mode&0o170000 == 0o100000 {
					got[e.Name] = e.Data
				}
			}
			for name, content := range tt.want {
				if got[name] != content {
					t.Errorf("%s = %q, want %q", name, got[name], content)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("files %v, want %d files", got, len(tt.want))
			}
		})
	}
}

func TestMonitorArgs(t *testing.T) {
	long := "/" + strings.Repeat("d", 100) + "/mon.sock"
	tests := []struct {
		sock string
		want []string
	}{
		{"/root/.cache/godwit/run-1/mon.sock", []string{"-monitor", "unix:/root/.cache/godwit/run-1/mon.sock,server=on,wait=off"}},
		{long, nil},
		{"/tmp/a,b/mon.sock", nil},
	}
	for _, tt := range tests {
		got := monitorArgs(tt.sock)
		if strings.Join(got, " ") != strings.Join(tt.want, " ") || (got == nil) != (tt.want == nil) {
			t.Errorf("monitorArgs(%q) = %q, want %q", tt.sock, got, tt.want)
		}
	}
}
