// Package host describes the machine a benchmark ran on (CPU model, cores,
// memory, kernel, and what kind of KVM it has: hardware, nested or
// software) and the godwit build that ran it, for the benchmark report.
package host

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KVM kinds.
const (
	// KVMHardware: /dev/kvm on a CPU with VMX or SVM, not itself a guest.
	KVMHardware = "hardware"
	// KVMNested: /dev/kvm on a CPU with VMX or SVM that is itself a guest
	// of a hypervisor (the CPU flags show "hypervisor"): nested
	// virtualization, as in the repository's nested host.
	KVMNested = "nested"
	// KVMSoftware: a /dev/kvm without VMX or SVM in the CPU flags (for
	// instance a paravirtual KVM module such as kvm_pvm).
	KVMSoftware = "software"
	// KVMUnavailable: no usable /dev/kvm.
	KVMUnavailable = "unavailable"
)

// Machine describes a host.
type Machine struct {
	// CPUModel is /proc/cpuinfo's first "model name".
	CPUModel string `json:"cpu_model"`
	// CPUs is the number of logical CPUs in /proc/cpuinfo.
	CPUs int `json:"cpus"`
	// Usable is the number of CPUs this process may run on.
	Usable int `json:"usable_cpus"`
	// MemoryBytes is MemTotal from /proc/meminfo.
	MemoryBytes uint64 `json:"memory_bytes"`
	// Kernel is the kernel release and version (uname -r, uname -v).
	Kernel string `json:"kernel"`
	// KVM is KVMHardware, KVMNested, KVMSoftware or KVMUnavailable.
	KVM string `json:"kvm"`
	// KVMDetail says what KVM was decided from.
	KVMDetail string `json:"kvm_detail"`
	// KVMModules lists the loaded kvm* kernel modules.
	KVMModules []string `json:"kvm_modules,omitempty"`
	// GoVersion is the Go release godwit was built with.
	GoVersion string `json:"go_version"`
}

// Describe returns the description of this machine. It never fails:
// what it cannot read stays empty.
func Describe() Machine {
	m := Machine{Usable: runtime.NumCPU(), GoVersion: runtime.Version()}
	ci, _ := os.ReadFile("/proc/cpuinfo")
	info := ParseCPUInfo(string(ci))
	m.CPUModel, m.CPUs = info.Model, info.CPUs
	m.MemoryBytes = memTotal()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = strings.TrimSpace(unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Version[:]))
	}
	m.KVMModules = kvmModules("/sys/module")
	devErr := openKVM()
	m.KVM, m.KVMDetail = ClassifyKVM(devErr, info)
	return m
}

// CPUInfo is what Describe takes from /proc/cpuinfo.
type CPUInfo struct {
	// Model is the first "model name".
	Model string
	// CPUs counts the "processor" entries.
	CPUs int
	// VMX, SVM and Hypervisor report the first CPU's flags of those names.
	VMX, SVM, Hypervisor bool
}

// ParseCPUInfo reads the model, CPU count and virtualization flags from
// the text of /proc/cpuinfo.
func ParseCPUInfo(text string) CPUInfo {
	var ci CPUInfo
	flagsSeen := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "processor":
			ci.CPUs++
		case "model name":
			if ci.Model == "" {
				ci.Model = value
			}
		case "flags":
			if flagsSeen {
				continue
			}
			flagsSeen = true
			for _, f := range strings.Fields(value) {
				switch f {
				case "vmx":
					ci.VMX = true
				case "svm":
					ci.SVM = true
				case "hypervisor":
					ci.Hypervisor = true
				}
			}
		}
	}
	return ci
}

// ClassifyKVM decides the kind of KVM from the result of opening /dev/kvm
// and the CPU flags, and explains the decision.
func ClassifyKVM(devErr error, ci CPUInfo) (kind, detail string) {
	if devErr != nil {
		return KVMUnavailable, "/dev/kvm: " + devErr.Error()
	}
	virt := ""
	switch {
	case ci.VMX:
		virt = "vmx"
	case ci.SVM:
		virt = "svm"
	}
	switch {
	case virt == "":
		return KVMSoftware, "/dev/kvm opens but the CPU flags have neither vmx nor svm"
	case ci.Hypervisor:
		return KVMNested, "/dev/kvm on a CPU with " + virt + " that runs under a hypervisor (cpu flag \"hypervisor\")"
	}
	return KVMHardware, "/dev/kvm on a CPU with " + virt + ", no hypervisor flag"
}

// openKVM opens and closes /dev/kvm read-write.
func openKVM() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// kvmModules lists the kvm* entries of the module directory (sysfs).
func kvmModules(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "kvm") {
			out = append(out, e.Name())
		}
	}
	return out
}

// memTotal returns MemTotal from /proc/meminfo in bytes, or 0.
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// Version names the running godwit build: linkerVersion when the build set
// one (-ldflags -X main.version=...) and it is not "dev"; otherwise the VCS
// revision the Go toolchain recorded; otherwise `git describe --always
// --dirty` of the checkout that holds the executable, marked as such;
// otherwise linkerVersion.
func Version(linkerVersion string) string {
	if linkerVersion != "" && linkerVersion != "dev" {
		return linkerVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if modified == "true" {
				rev += "-dirty"
			}
			return rev
		}
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty", "--tags")
			cmd.Dir = filepath.Dir(exe)
			if out, err := cmd.Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
				return strings.TrimSpace(string(out)) + " (git describe of the binary's checkout)"
			}
		}
	}
	if linkerVersion == "" {
		return "unknown"
	}
	return linkerVersion + " (revision unknown)"
}
