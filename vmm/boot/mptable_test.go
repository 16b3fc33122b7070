package boot

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"godwit/vmm/memory"
)

// parsedMP is an MP table decoded from guest memory the way Linux's
// mpparse.c reads it.
type parsedMP struct {
	procs      []byte // local APIC IDs, in order
	bsp        []byte // local APIC IDs with the BP flag
	buses      map[byte]string
	ioapicID   byte
	ioapicAddr uint32
	ioInts     [][4]byte // srcbus, srcirq, dstapic, dstpin
	localInts  [][3]byte // type, dst lapic, lint
	count      int
}

func parseMP(t *testing.T, m *memory.Memory) parsedMP {
	t.Helper()
	le := binary.LittleEndian
	fp := readBytes(t, m, 0x9fc00, 16)
	if string(fp[:4]) != "_MP_" || fp[8] != 1 || fp[9] != 4 {
		t.Fatalf("floating pointer %x", fp)
	}
	if s := sum(fp); s != 0 {
		t.Errorf("floating pointer checksum: bytes sum to %#x", s)
	}
	if fp[11] != 0 {
		t.Errorf("feature byte 1 = %d, want 0 (configuration table present)", fp[11])
	}
	ptr := uint64(le.Uint32(fp[4:]))
	hdr := readBytes(t, m, ptr, 44)
	if string(hdr[:4]) != "PCMP" || hdr[6] != 4 {
		t.Fatalf("config table header %x", hdr)
	}
	length := uint64(le.Uint16(hdr[4:]))
	if ptr+length > 0x9fc00 {
		t.Errorf("config table [%#x, %#x) runs into the floating pointer", ptr, ptr+length)
	}
	tbl := readBytes(t, m, ptr, length)
	if s := sum(tbl); s != 0 {
		t.Errorf("config table checksum: bytes sum to %#x", s)
	}
	if got := le.Uint32(hdr[36:]); got != 0xfee00000 {
		t.Errorf("local APIC address %#x", got)
	}
	p := parsedMP{buses: map[byte]string{}, count: int(le.Uint16(hdr[34:]))}
	n := 0
	for off := uint64(44); off < length; n++ {
		e := tbl[off:]
		switch e[0] {
		case 0:
			p.procs = append(p.procs, e[1])
			if e[3]&1 == 0 {
				t.Errorf("processor %d not enabled", e[1])
			}
			if e[3]&2 != 0 {
				p.bsp = append(p.bsp, e[1])
			}
			if e[2] == 0 || le.Uint32(e[8:])&(1<<9) == 0 {
				t.Errorf("processor %d: APIC version %#x features %#x", e[1], e[2], le.Uint32(e[8:]))
			}
			off += 20
			continue
		case 1:
			p.buses[e[1]] = string(e[2:8])
		case 2:
			p.ioapicID, p.ioapicAddr = e[1], le.Uint32(e[4:])
			if e[2] != 0x11 || e[3]&1 == 0 {
				t.Errorf("IOAPIC version %#x flags %#x", e[2], e[3])
			}
		case 3:
			if e[1] != 0 {
				t.Errorf("I/O interrupt type %d", e[1])
			}
			p.ioInts = append(p.ioInts, [4]byte{e[4], e[5], e[6], e[7]})
		case 4:
			p.localInts = append(p.localInts, [3]byte{e[1], e[6], e[7]})
		default:
			t.Fatalf("unknown entry type %d at %#x", e[0], off)
		}
		off += 8
	}
	if n != p.count {
		t.Errorf("header entry count %d, table has %d entries", p.count, n)
	}
	return p
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

func TestWriteMPTable(t *testing.T) {
	for _, cpus := range []int{1, 2, 16} {
		t.Run(fmt.Sprintf("%d CPUs", cpus), func(t *testing.T) {
			m := newMem(t, 64<<20)
			if err := WriteMPTable(m, cpus); err != nil {
				t.Fatal(err)
			}
			p := parseMP(t, m)
			if len(p.procs) != cpus {
				t.Errorf("%d processor entries, want %d", len(p.procs), cpus)
			}
			for i, id := range p.procs {
				if int(id) != i {
					t.Errorf("processor %d has APIC ID %d", i, id)
				}
			}
			if len(p.bsp) != 1 || p.bsp[0] != 0 {
				t.Errorf("BSP flags on %v, want [0]", p.bsp)
			}
			if p.buses[0] != "PCI   " || p.buses[1] != "ISA   " || len(p.buses) != 2 {
				t.Errorf("buses %q", p.buses)
			}
			if int(p.ioapicID) != cpus || p.ioapicAddr != 0xfec00000 {
				t.Errorf("IOAPIC ID %d at %#x", p.ioapicID, p.ioapicAddr)
			}
			if len(p.ioInts) != 16 {
				t.Fatalf("%d I/O interrupt entries, want 16", len(p.ioInts))
			}
			for irq, e := range p.ioInts {
				if e != [4]byte{1, byte(irq), byte(cpus), byte(irq)} {
					t.Errorf("ISA IRQ %d entry %v, want bus 1 irq %d -> IOAPIC %d pin %d", irq, e, irq, cpus, irq)
				}
			}
			wantLocal := [][3]byte{{3, 0, 0}, {1, 0xff, 1}} // ExtINT -> BSP LINT0, NMI -> all LINT1
			if len(p.localInts) != 2 || p.localInts[0] != wantLocal[0] || p.localInts[1] != wantLocal[1] {
				t.Errorf("local interrupts %v, want %v", p.localInts, wantLocal)
			}
		})
	}
}

func TestWriteMPConfigExtraInterrupts(t *testing.T) {
	m := newMem(t, 64<<20)
	cfg := MPConfig{CPUs: 4, Interrupts: []MPInterrupt{
		PCIInterrupt(1, 1, 16),
		PCIInterrupt(2, 4, 19),
		{Type: MPIntINT, Flags: MPFlagsActiveHigh | MPFlagsLevel, SourceBus: MPBusISA, SourceIRQ: 9, IOAPICPin: 20},
	}}
	if err := WriteMPConfig(m, cfg); err != nil {
		t.Fatal(err)
	}
	p := parseMP(t, m)
	want := [][4]byte{{0, 1 << 2, 4, 16}, {0, 2<<2 | 3, 4, 19}, {1, 9, 4, 20}}
	if len(p.ioInts) != 16+len(want) {
		t.Fatalf("%d I/O interrupt entries", len(p.ioInts))
	}
	for i, w := range want {
		if got := p.ioInts[16+i]; got != w {
			t.Errorf("extra entry %d = %v, want %v", i, got, w)
		}
	}
	if MPTableSize(cfg) != uint64(44+4*20+(2+1+19+2)*8) {
		t.Errorf("MPTableSize = %d", MPTableSize(cfg))
	}
}

func TestWriteMPConfigErrors(t *testing.T) {
	many := make([]MPInterrupt, 400)
	for i := range many {
		many[i] = PCIInterrupt(uint8(i%32), 1, 16)
	}
	tests := []struct {
		name string
		cfg  MPConfig
		want string
	}{
		{"zero CPUs", MPConfig{CPUs: 0}, "0 vCPUs, must be 1 to 16"},
		{"17 CPUs", MPConfig{CPUs: 17}, "17 vCPUs, must be 1 to 16"},
		{"negative CPUs", MPConfig{CPUs: -1}, "must be 1 to 16"},
		{"IOAPIC pin 24", MPConfig{CPUs: 1, Interrupts: []MPInterrupt{PCIInterrupt(0, 1, 24)}}, "IOAPIC pin 24"},
		{"ISA IRQ 16", MPConfig{CPUs: 1, Interrupts: []MPInterrupt{{SourceBus: MPBusISA, SourceIRQ: 16}}}, "ISA IRQ 16"},
		{"PCI source 0x80", MPConfig{CPUs: 1, Interrupts: []MPInterrupt{{SourceBus: MPBusPCI, SourceIRQ: 0x80}}}, "PCI source"},
		{"unknown bus", MPConfig{CPUs: 1, Interrupts: []MPInterrupt{{SourceBus: 7}}}, "source bus 7"},
		{"bad type", MPConfig{CPUs: 1, Interrupts: []MPInterrupt{{Type: 4, SourceBus: MPBusISA}}}, "type 4"},
		{"reserved polarity", MPConfig{CPUs: 1, Interrupts: []MPInterrupt{{Flags: 2, SourceBus: MPBusISA}}}, "flags 0x2"},
		{"too many interrupts", MPConfig{CPUs: 16, Interrupts: many}, "room for 3072"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(t, 4<<20)
			err := WriteMPConfig(m, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WriteMPConfig = %v, want error containing %q", err, tc.want)
			}
		})
	}
	if err := WriteMPTable(newMem(t, 4<<20), 17); err == nil {
		t.Error("WriteMPTable(17) succeeded")
	}
}
