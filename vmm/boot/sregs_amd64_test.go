package boot

import (
	"testing"

	"godwit/vmm/kvm"
)

// resetSregs returns special registers as KVM_GET_SREGS reports them for a
// freshly created vCPU (x86 reset state).
func resetSregs() kvm.Sregs {
	data := kvm.Segment{Limit: 0xffff, Type: 3, Present: 1, S: 1}
	return kvm.Sregs{
		CS:       kvm.Segment{Base: 0xffff0000, Limit: 0xffff, Selector: 0xf000, Type: 0xb, Present: 1, S: 1},
		DS:       data,
		ES:       data,
		FS:       data,
		GS:       data,
		SS:       data,
		TR:       kvm.Segment{Limit: 0xffff, Type: 0xb, Present: 1},
		LDT:      kvm.Segment{Limit: 0xffff, Type: 2, Present: 1},
		GDT:      kvm.DTable{Limit: 0xffff},
		IDT:      kvm.DTable{Limit: 0xffff},
		CR0:      0x60000010,
		APICBase: 0xfee00900,
	}
}

func TestSetupSregs(t *testing.T) {
	longCS := kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	longData := kvm.Segment{Limit: 0xffffffff, Selector: 0x18, Type: 3, Present: 1, DB: 1, S: 1, G: 1}
	realCS := kvm.Segment{Limit: 0xffff, Type: 0xb, Present: 1, S: 1}
	realData := kvm.Segment{Limit: 0xffff, Type: 3, Present: 1, S: 1}
	tr := kvm.Segment{Limit: 0xffff, Type: 0xb, Present: 1}
	ldt := kvm.Segment{Type: 2, Unusable: 1}

	fromLong := resetSregs()
	SetupSregs(&fromLong, LongMode)

	tests := []struct {
		name string
		in   kvm.Sregs
		mode Mode
		want kvm.Sregs
	}{
		{
			name: "long mode from reset",
			in:   resetSregs(),
			mode: LongMode,
			want: kvm.Sregs{
				CS: longCS, DS: longData, ES: longData, FS: longData, GS: longData, SS: longData,
				TR: tr, LDT: ldt,
				GDT: kvm.DTable{Base: 0x500, Limit: 31},
				CR0: 0x80000031, // PG | NE | ET | PE; CD and NW cleared
				CR3: 0x1000, CR4: 0x20, EFER: 0x500,
				APICBase: 0xfee00900,
			},
		},
		{
			name: "real mode from reset",
			in:   resetSregs(),
			mode: RealMode,
			want: kvm.Sregs{
				CS: realCS, DS: realData, ES: realData, FS: realData, GS: realData, SS: realData,
				TR: tr, LDT: ldt,
				GDT: kvm.DTable{Limit: 0xffff}, IDT: kvm.DTable{Limit: 0x3ff},
				CR0: 0x60000010, APICBase: 0xfee00900,
			},
		},
		{
			name: "real mode from long mode",
			in:   fromLong,
			mode: RealMode,
			want: kvm.Sregs{
				CS: realCS, DS: realData, ES: realData, FS: realData, GS: realData, SS: realData,
				TR: tr, LDT: ldt,
				GDT: kvm.DTable{Base: 0x500, Limit: 31}, IDT: kvm.DTable{Limit: 0x3ff},
				CR0: 0x30, CR3: 0x1000, CR4: 0x20, APICBase: 0xfee00900,
			},
		},
		{
			name: "unknown mode leaves sregs alone",
			in:   resetSregs(),
			mode: Mode(7),
			want: resetSregs(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in
			SetupSregs(&got, tc.mode)
			if got != tc.want {
				t.Errorf("SetupSregs(%v):\n got %+v\nwant %+v", tc.mode, got, tc.want)
			}
		})
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{RealMode: "real mode", LongMode: "long mode", Mode(9): "Mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("Mode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}
