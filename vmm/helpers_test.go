package vmm

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"godwit/migrate"
	"godwit/vmm/kvm"
	"godwit/vmm/memory"
)

// errMatches reports whether err is what a table asks for: no error for
// an empty want, else an error containing want.
func errMatches(err error, want string) bool {
	if want == "" {
		return err == nil
	}
	return err != nil && strings.Contains(err.Error(), want)
}

// parseCase is one input of a device flag parser (ParseDisk, ParseNet).
type parseCase[T comparable] struct {
	in      string
	want    T
	wantErr string
}

// checkParse runs parse over cases: each input either fails with an
// error containing wantErr or gives want, whose String form parses back
// to the same value.
func checkParse[T interface {
	comparable
	String() string
}](t *testing.T, name string, parse func(string) (T, error), cases []parseCase[T]) {
	t.Helper()
	for _, tc := range cases {
		got, err := parse(tc.in)
		if tc.wantErr != "" {
			if !errMatches(err, tc.wantErr) {
				t.Errorf("%s(%q) error %v, want %q", name, tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s(%q) = %+v, %v; want %+v", name, tc.in, got, err, tc.want)
		}
		if again, err := parse(got.String()); err != nil || again != got {
			t.Errorf("String %q does not parse back: %+v, %v", got.String(), again, err)
		}
	}
}

// validateCase is a change to a minimal configuration and what Validate
// must say about it.
type validateCase struct {
	name    string
	mut     func(*Config)
	wantErr string
}

// checkValidate runs Config.Validate over cases, each applied to a
// one-vCPU configuration without a console.
func checkValidate(t *testing.T, cases []validateCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{CPUs: 1, Serial: SerialConfig{Mode: "none"}}
			tc.mut(&c)
			if err := c.Validate(); !errMatches(err, tc.wantErr) {
				t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// checkList checks a function's result against a table row: the error it
// wants, or the list.
func checkList[T comparable](t *testing.T, name string, got []T, err error, want []T, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if !errMatches(err, wantErr) {
			t.Fatalf("%s: error %v, want %q", name, err, wantErr)
		}
		return
	}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("%s = %+v, %v; want %+v", name, got, err, want)
	}
}

// setupPCIError builds the devices of a VM with cfg over 16 MiB of RAM and
// returns what setupPCI said; whatever it opened is closed.
func setupPCIError(t *testing.T, cfg Config) error {
	t.Helper()
	v := &VM{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	if v.mem, err = memory.New(16 << 20); err != nil {
		t.Fatal(err)
	}
	defer v.mem.Close()
	defer v.closeDevices()
	return v.setupPCI()
}

// parseTestConfig parses the handshake configuration of a 64 MiB,
// one-vCPU Linux guest with the JSON members in extra (",\"devices\":...",
// or ""). It reports false when parsing failed as wantErr says it must.
func parseTestConfig(t *testing.T, extra, wantErr string) (MigrationConfig, bool) {
	t.Helper()
	mc, err := ParseMigrationConfig([]byte(`{"memory_bytes":67108864,"cpus":1,"guest":"linux","cpuid":[]` + extra + `}`))
	if !errMatches(err, wantErr) {
		t.Fatalf("ParseMigrationConfig: %v, want %q", err, wantErr)
	}
	return mc, err == nil
}

// roundTripConfig encodes mc as a source does and parses it back as a
// destination does.
func roundTripConfig(t *testing.T, mc MigrationConfig) MigrationConfig {
	t.Helper()
	js, err := json.Marshal(mc)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseMigrationConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// checkSavesSame checks that v's PCI state saves as sections.
func checkSavesSame(t *testing.T, v *VM, sections []migrate.Section) {
	t.Helper()
	again, err := v.savePCIState()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(again, sections, func(a, b migrate.Section) bool {
		return a.ID == b.ID && a.Version == b.Version && string(a.Data) == string(b.Data)
	}) {
		t.Fatal("restored state saves differently")
	}
}

// newKVMTestVM creates (but does not start) a VM with cfg on /dev/kvm,
// skipping the test where KVM is missing or not permitted; the VM is
// closed when the test ends.
func newKVMTestVM(t *testing.T, cfg Config) *VM {
	t.Helper()
	v, err := New(cfg)
	if errors.Is(err, kvm.ErrNoKVM) || errors.Is(err, kvm.ErrKVMPermission) {
		t.Skipf("needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// closeTwice closes v's devices twice, as VM.Close may.
func closeTwice(t *testing.T, v *VM) {
	t.Helper()
	if err := v.closeDevices(); err != nil {
		t.Fatal(err)
	}
	if err := v.closeDevices(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
