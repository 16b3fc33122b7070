package host

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const cpuinfo = `processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13
flags		: fpu vme de pse tsc msr svm hypervisor lm
bogomips	: 4900.00

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13
flags		: fpu vme de pse tsc msr lm
`

func TestParseCPUInfo(t *testing.T) {
	ci := ParseCPUInfo(cpuinfo)
	if ci.Model != "AMD EPYC 7B13" || ci.CPUs != 2 || !ci.SVM || ci.VMX || !ci.Hypervisor {
		t.Errorf("ParseCPUInfo = %+v", ci)
	}
	if ci := ParseCPUInfo(""); ci != (CPUInfo{}) {
		t.Errorf("empty cpuinfo: %+v", ci)
	}
	if ci := ParseCPUInfo("flags : vmx\n"); !ci.VMX || ci.Hypervisor {
		t.Errorf("vmx: %+v", ci)
	}
}

func TestClassifyKVM(t *testing.T) {
	for _, tt := range []struct {
		err  error
		ci   CPUInfo
		want string
	}{
		{errors.New("no such file"), CPUInfo{VMX: true}, KVMUnavailable},
		{nil, CPUInfo{}, KVMSoftware},
		{nil, CPUInfo{Hypervisor: true}, KVMSoftware},
		{nil, CPUInfo{SVM: true, Hypervisor: true}, KVMNested},
		{nil, CPUInfo{VMX: true}, KVMHardware},
	} {
		kind, detail := ClassifyKVM(tt.err, tt.ci)
		if kind != tt.want || detail == "" {
			t.Errorf("ClassifyKVM(%v, %+v) = %q, %q; want %q", tt.err, tt.ci, kind, detail, tt.want)
		}
	}
}

func TestKVMModules(t *testing.T) {
	dir := t.TempDir()
	for _, m := range []string{"kvm", "kvm_amd", "tun", "bridge"} {
		if err := os.Mkdir(filepath.Join(dir, m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(kvmModules(dir), ","); got != "kvm,kvm_amd" {
		t.Errorf("kvmModules = %q", got)
	}
	if got := kvmModules(filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("missing dir: %v", got)
	}
}

func TestDescribeAndVersion(t *testing.T) {
	m := Describe()
	if m.Usable < 1 || m.GoVersion == "" || m.KVM == "" || m.KVMDetail == "" {
		t.Errorf("Describe = %+v", m)
	}
	if v := Version("v1.2.3"); v != "v1.2.3" {
		t.Errorf("Version(v1.2.3) = %q", v)
	}
	if v := Version("dev"); v == "" || v == "dev" {
		t.Errorf("Version(dev) = %q: want a revision or a marked fallback", v)
	}
}
