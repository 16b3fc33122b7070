package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The tests decode what WriteACPI leaves in guest memory the way an OS
// reads it (RSDP -> XSDT -> tables, AML parsed back into named objects),
// with the offsets of ACPI 6.5 written literally rather than taken from
// the package's constants.

// acpiTables is the ACPI area of a guest decoded.
type acpiTables struct {
	rsdp   []byte
	byName map[string][]byte // signature -> table, reached through the XSDT
	rsdt   []uint32
	xsdt   []uint64
	facs   []byte
	dsdt   []byte
}

// readTable reads the System Description Table at addr and checks its
// length and checksum.
func readTable(t *testing.T, area []byte, addr uint64) []byte {
	t.Helper()
	if addr < 0xe0000 || addr+36 > 0xe2000 {
		t.Fatalf("table pointer %#x outside the ACPI area", addr)
	}
	off := addr - 0xe0000
	n := uint64(binary.LittleEndian.Uint32(area[off+4:]))
	if n < 36 || off+n > uint64(len(area)) {
		t.Fatalf("table %q at %#x: length %d", area[off:off+4], addr, n)
	}
	tbl := area[off : off+n]
	if s := sum(tbl); s != 0 {
		t.Errorf("table %q at %#x: checksum: bytes sum to %#x", tbl[:4], addr, s)
	}
	if string(tbl[10:16]) != "GODWIT" {
		t.Errorf("table %q: OEM ID %q", tbl[:4], tbl[10:16])
	}
	return tbl
}

// decodeACPI follows the pointers from the RSDP.
func decodeACPI(t *testing.T, area []byte) acpiTables {
	t.Helper()
	le := binary.LittleEndian
	// Linux scans 16-byte boundaries of [0xe0000, 0x100000) for the RSDP.
	var rsdpOff = -1
	for off := 0; off+36 <= len(area); off += 16 {
		if string(area[off:off+8]) == "RSD PTR " {
			rsdpOff = off
			break
		}
	}
	if rsdpOff < 0 {
		t.Fatal("no RSDP signature on a 16-byte boundary")
	}
	a := acpiTables{rsdp: area[rsdpOff : rsdpOff+36], byName: map[string][]byte{}}
	if s := sum(a.rsdp[:20]); s != 0 {
		t.Errorf("RSDP checksum (first 20 bytes) sums to %#x", s)
	}
	if s := sum(a.rsdp); s != 0 {
		t.Errorf("RSDP extended checksum sums to %#x", s)
	}
	if a.rsdp[15] != 2 || le.Uint32(a.rsdp[20:]) != 36 {
		t.Errorf("RSDP revision %d length %d, want 2 and 36", a.rsdp[15], le.Uint32(a.rsdp[20:]))
	}
	rsdt := readTable(t, area, uint64(le.Uint32(a.rsdp[16:])))
	xsdt := readTable(t, area, le.Uint64(a.rsdp[24:]))
	if string(rsdt[:4]) != "RSDT" || string(xsdt[:4]) != "XSDT" {
		t.Fatalf("RSDP points at %q and %q", rsdt[:4], xsdt[:4])
	}
	for off := 36; off+4 <= len(rsdt); off += 4 {
		a.rsdt = append(a.rsdt, le.Uint32(rsdt[off:]))
	}
	for off := 36; off+8 <= len(xsdt); off += 8 {
		p := le.Uint64(xsdt[off:])
		a.xsdt = append(a.xsdt, p)
		tbl := readTable(t, area, p)
		a.byName[string(tbl[:4])] = tbl
	}
	fadt := a.byName["FACP"]
	if fadt == nil {
		t.Fatal("XSDT lists no FADT")
	}
	facs := uint64(le.Uint32(fadt[36:]))
	if facs%64 != 0 || facs < 0xe0000 || facs+64 > 0xe2000 {
		t.Fatalf("FIRMWARE_CTRL %#x", facs)
	}
	a.facs = area[facs-0xe0000 : facs-0xe0000+64]
	a.dsdt = readTable(t, area, le.Uint64(fadt[140:]))
	return a
}

func readACPIArea(t *testing.T, cfg ACPIConfig) []byte {
	t.Helper()
	m := newMem(t, 64<<20)
	if err := WriteACPI(m, cfg); err != nil {
		t.Fatalf("WriteACPI: %v", err)
	}
	return readBytes(t, m, 0xe0000, 0x2000)
}

// testPCI is a bus like devices/pci's with one device per INTx route.
func testPCI(routes ...ACPIPCIRoute) *ACPIPCIHost {
	return &ACPIPCIHost{MemBase: 0xc0000000, MemEnd: 0xfe000000, Routes: routes}
}

func TestWriteACPITables(t *testing.T) {
	manyRoutes := make([]ACPIPCIRoute, 0, 31)
	for s := uint8(1); s < 32; s++ {
		manyRoutes = append(manyRoutes, ACPIPCIRoute{Slot: s, Pin: 1 + s%4, GSI: 16 + s%8})
	}
	tests := []struct {
		name string
		cfg  ACPIConfig
	}{
		{"1 vCPU, no PCI", ACPIConfig{CPUs: 1}},
		{"2 vCPUs, PCI without INTx", ACPIConfig{CPUs: 2, PCI: testPCI()}},
		{"2 vCPUs, virtio-rng on INTA", ACPIConfig{CPUs: 2, PCI: testPCI(ACPIPCIRoute{Slot: 1, Pin: 1, GSI: 17})}},
		{"16 vCPUs, 31 devices", ACPIConfig{CPUs: 16, PCI: testPCI(manyRoutes...)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := decodeACPI(t, readACPIArea(t, tt.cfg))
			if !reflect.DeepEqual(a.rsdt, []uint32{0xe0100, 0xe0300}) || !reflect.DeepEqual(a.xsdt, []uint64{0xe0100, 0xe0300}) {
				t.Errorf("RSDT %#x XSDT %#x, want FADT and MADT in both", a.rsdt, a.xsdt)
			}
			checkFACS(t, a.facs)
			checkFADT(t, a.byName["FACP"])
			checkMADT(t, a.byName["APIC"], tt.cfg.CPUs)
			checkDSDT(t, a.dsdt, tt.cfg)
		})
	}
}

func checkFACS(t *testing.T, f []byte) {
	t.Helper()
	if string(f[:4]) != "FACS" || binary.LittleEndian.Uint32(f[4:]) != 64 {
		t.Errorf("FACS header % x", f[:8])
	}
	if v := binary.LittleEndian.Uint32(f[12:]); v != 0 {
		t.Errorf("FACS firmware waking vector %#x, want 0", v)
	}
}

func checkFADT(t *testing.T, f []byte) {
	t.Helper()
	if len(f) != 276 || f[8] != 6 || f[131] != 4 {
		t.Fatalf("FADT length %d revision %d.%d, want 276 and 6.4", len(f), f[8], f[131])
	}
	le := binary.LittleEndian
	field := func(off, size int) uint64 {
		switch size {
		case 1:
			return uint64(f[off])
		case 2:
			return uint64(le.Uint16(f[off:]))
		case 4:
			return uint64(le.Uint32(f[off:]))
		}
		return le.Uint64(f[off:])
	}
	// ACPI 6.5 table 5.9.
	for _, w := range []struct {
		name       string
		off, size  int
		want       uint64
		wantIsMask bool // want is a mask of bits that must be set
	}{
		{"FIRMWARE_CTRL", 36, 4, 0xe0040, false},
		{"DSDT", 40, 4, 0xe0400, false},
		{"SCI_INT", 46, 2, 9, false},
		{"SMI_CMD", 48, 4, 0, false},
		{"ACPI_ENABLE", 52, 1, 0, false},
		{"PM1a_EVT_BLK", 56, 4, 0x600, false},
		{"PM1b_EVT_BLK", 60, 4, 0, false},
		{"PM1a_CNT_BLK", 64, 4, 0x604, false},
		{"PM1b_CNT_BLK", 68, 4, 0, false},
		{"PM_TMR_BLK", 76, 4, 0, false},
		{"GPE0_BLK", 80, 4, 0, false},
		{"PM1_EVT_LEN", 88, 1, 4, false},
		{"PM1_CNT_LEN", 89, 1, 2, false},
		{"PM_TMR_LEN", 91, 1, 0, false},
		{"P_LVL2_LAT", 96, 2, 101, false},
		{"P_LVL3_LAT", 98, 2, 1001, false},
		{"IAPC_BOOT_ARCH 8042", 109, 2, 1 << 1, true},
		{"Flags WBINVD|PROC_C1|SLP_BUTTON", 112, 4, 1<<0 | 1<<2 | 1<<5, true},
		{"X_FIRMWARE_CTRL (zero: FIRMWARE_CTRL is set)", 132, 8, 0, false},
		{"X_DSDT", 140, 8, 0xe0400, false},
		{"X_PM1a_EVT_BLK space/width", 148, 2, 1 | 32<<8, false},
		{"X_PM1a_EVT_BLK address", 152, 8, 0x600, false},
		{"X_PM1b_EVT_BLK address", 164, 8, 0, false},
		{"X_PM1a_CNT_BLK space/width", 172, 2, 1 | 16<<8, false},
		{"X_PM1a_CNT_BLK address", 176, 8, 0x604, false},
		{"X_PM_TMR_BLK address", 212, 8, 0, false},
		{"X_GPE0_BLK address", 224, 8, 0, false},
	} {
		got := field(w.off, w.size)
		if w.wantIsMask && got&w.want != w.want || !w.wantIsMask && got != w.want {
			t.Errorf("FADT %s (offset %d) = %#x, want %#x", w.name, w.off, got, w.want)
		}
	}
	arch := le.Uint16(f[109:])
	if arch&(1<<3) != 0 || arch&(1<<5) != 0 {
		t.Errorf("IAPC_BOOT_ARCH %#x: claims no MSI or no CMOS RTC", arch)
	}
	flags := le.Uint32(f[112:])
	if flags&(1<<20) != 0 || flags&(1<<4) != 0 {
		t.Errorf("flags %#x: hardware-reduced or no fixed power button", flags)
	}
}

func checkMADT(t *testing.T, m []byte, cpus int) {
	t.Helper()
	if m == nil {
		t.Fatal("XSDT lists no MADT")
	}
	le := binary.LittleEndian
	if le.Uint32(m[36:]) != 0xfee00000 || le.Uint32(m[40:])&1 == 0 {
		t.Errorf("MADT local APIC address %#x flags %#x", le.Uint32(m[36:]), le.Uint32(m[40:]))
	}
	var lapics, nmis []string
	var ioapics, overrides []string
	for off := 44; off < len(m); {
		typ, n := m[off], int(m[off+1])
		if n < 2 || off+n > len(m) {
			t.Fatalf("MADT entry at %d: type %d length %d", off, typ, n)
		}
		e := m[off : off+n]
		switch typ {
		case 0:
			lapics = append(lapics, fmt.Sprintf("uid=%d id=%d flags=%d", e[2], e[3], le.Uint32(e[4:])))
		case 1:
			ioapics = append(ioapics, fmt.Sprintf("id=%d addr=%#x base=%d", e[2], le.Uint32(e[4:]), le.Uint32(e[8:])))
		case 2:
			overrides = append(overrides, fmt.Sprintf("bus=%d irq=%d gsi=%d flags=%#x", e[2], e[3], le.Uint32(e[4:]), le.Uint16(e[8:])))
		case 4:
			nmis = append(nmis, fmt.Sprintf("uid=%#x flags=%d lint=%d", e[2], le.Uint16(e[3:]), e[5]))
		default:
			t.Errorf("MADT entry type %d unexpected", typ)
		}
		off += n
	}
	var want []string
	for i := range cpus {
		want = append(want, fmt.Sprintf("uid=%d id=%d flags=1", i, i))
	}
	if !reflect.DeepEqual(lapics, want) {
		t.Errorf("local APICs %q, want %q", lapics, want)
	}
	// The IOAPIC ID is the MP table's (the vCPU count).
	if w := []string{fmt.Sprintf("id=%d addr=0xfec00000 base=0", cpus)}; !reflect.DeepEqual(ioapics, w) {
		t.Errorf("IOAPICs %q, want %q", ioapics, w)
	}
	// Only the SCI is overridden (level, active high); IRQ 0 stays on
	// GSI 0 like every other ISA IRQ, as in the MP table.
	if w := []string{"bus=0 irq=9 gsi=9 flags=0xd"}; !reflect.DeepEqual(overrides, w) {
		t.Errorf("overrides %q, want %q", overrides, w)
	}
	if w := []string{"uid=0xff flags=0 lint=1"}; !reflect.DeepEqual(nmis, w) {
		t.Errorf("local APIC NMIs %q, want %q", nmis, w)
	}
}

func checkDSDT(t *testing.T, d []byte, cfg ACPIConfig) {
	t.Helper()
	if d[8] < 2 {
		t.Errorf("DSDT revision %d: integers would be 32-bit", d[8])
	}
	objs := parseAML(t, d[36:])
	if got, want := objs[`\_S5_`], []any{uint64(5), uint64(5), uint64(0), uint64(0)}; !reflect.DeepEqual(got, want) {
		t.Errorf(`\_S5_ = %v, want %v`, got, want)
	}
	if cfg.PCI == nil {
		if len(objs) != 1 {
			t.Errorf("DSDT without PCI has %v", objs)
		}
		return
	}
	if got := objs[`\_SB_.PCI0._HID`]; got != uint64(0x030ad041) {
		t.Errorf("PCI0._HID = %#v, want EISAID PNP0A03 (0x030ad041)", got)
	}
	if got := objs[`\_SB_.PCI0._UID`]; got != uint64(0) {
		t.Errorf("PCI0._UID = %#v", got)
	}
	crs, _ := objs[`\_SB_.PCI0._CRS`].([]byte)
	res := parseResources(t, crs)
	wantRes := []string{
		"word type=2 flags=0xc min=0x0 max=0x0 len=0x1",
		"dword type=0 flags=0xc min=0xc0000000 max=0xfdffffff len=0x3e000000",
		"end",
	}
	if !reflect.DeepEqual(res, wantRes) {
		t.Errorf("PCI0._CRS = %q, want %q", res, wantRes)
	}
	prt, hasPRT := objs[`\_SB_.PCI0._PRT`]
	if len(cfg.PCI.Routes) == 0 {
		if hasPRT {
			t.Errorf("_PRT %v without routes", prt)
		}
		return
	}
	var want []any
	for _, r := range cfg.PCI.Routes {
		want = append(want, []any{uint64(r.Slot)<<16 | 0xffff, uint64(r.Pin - 1), uint64(0), uint64(r.GSI)})
	}
	if !reflect.DeepEqual(prt, want) {
		t.Errorf("_PRT = %v, want %v", prt, want)
	}
}

// parseResources decodes the resource descriptors of a _CRS buffer
// (ACPI 6.5 §6.4) that godwit uses.
func parseResources(t *testing.T, b []byte) []string {
	t.Helper()
	le := binary.LittleEndian
	var out []string
	for len(b) > 0 {
		switch {
		case b[0] == 0x79 && len(b) >= 2: // End Tag
			out = append(out, "end")
			if len(b) != 2 {
				t.Errorf("%d bytes after the end tag", len(b)-2)
			}
			return out
		case b[0] == 0x88 && len(b) >= 16 && le.Uint16(b[1:]) == 13:
			out = append(out, fmt.Sprintf("word type=%d flags=%#x min=%#x max=%#x len=%#x", b[3], b[4], le.Uint16(b[8:]), le.Uint16(b[10:]), le.Uint16(b[14:])))
			b = b[16:]
		case b[0] == 0x87 && len(b) >= 26 && le.Uint16(b[1:]) == 23:
			out = append(out, fmt.Sprintf("dword type=%d flags=%#x min=%#x max=%#x len=%#x", b[3], b[4], le.Uint32(b[10:]), le.Uint32(b[14:]), le.Uint32(b[22:])))
			b = b[26:]
		default:
			t.Fatalf("resource descriptor % x not understood", b)
		}
	}
	t.Error("resource template without an end tag")
	return out
}

// amlParser decodes the AML subset the DSDT uses (ACPI 6.5 chapter 20)
// into named objects: integers as uint64, packages as []any, buffers as
// []byte, keyed by absolute path.
type amlParser struct {
	t    *testing.T
	objs map[string]any
}

func parseAML(t *testing.T, b []byte) map[string]any {
	t.Helper()
	p := &amlParser{t: t, objs: map[string]any{}}
	p.termList(b, `\`)
	return p.objs
}

// pkgLength decodes a PkgLength at b and returns the package's bytes after
// it and the rest after the package.
func (p *amlParser) pkgLength(b []byte) (body, rest []byte) {
	p.t.Helper()
	if len(b) == 0 {
		p.t.Fatal("AML truncated at a PkgLength")
	}
	extra := int(b[0] >> 6)
	n := int(b[0] & 0x3f)
	if extra > 0 {
		if b[0]&0x30 != 0 {
			p.t.Fatalf("PkgLength lead byte %#x has bits 4-5 set", b[0])
		}
		n = int(b[0] & 0x0f)
		for i := 0; i < extra; i++ {
			n |= int(b[1+i]) << (4 + 8*i)
		}
	}
	if n < 1+extra || n > len(b) {
		p.t.Fatalf("PkgLength %d with %d bytes left", n, len(b))
	}
	return b[1+extra : n], b[n:]
}

func (p *amlParser) nameString(b []byte, scope string) (string, []byte) {
	p.t.Helper()
	prefix := scope
	if len(b) > 0 && b[0] == '\\' {
		prefix, b = `\`, b[1:]
	}
	if len(b) < 4 {
		p.t.Fatal("AML truncated at a NameSeg")
	}
	seg := string(b[:4])
	for i, c := range seg {
		if !(c == '_' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			p.t.Fatalf("bad NameSeg %q", seg)
		}
	}
	if prefix != `\` {
		prefix += "."
	}
	return prefix + seg, b[4:]
}

func (p *amlParser) termList(b []byte, scope string) {
	p.t.Helper()
	for len(b) > 0 {
		switch {
		case b[0] == 0x08: // NameOp
			var name string
			name, b = p.nameString(b[1:], scope)
			if _, dup := p.objs[name]; dup {
				p.t.Errorf("%s defined twice", name)
			}
			p.objs[name], b = p.dataObject(b)
		case b[0] == 0x10: // ScopeOp
			body, rest := p.pkgLength(b[1:])
			name, terms := p.nameString(body, scope)
			p.termList(terms, name)
			b = rest
		case b[0] == 0x5b && len(b) > 1 && b[1] == 0x82: // DeviceOp
			body, rest := p.pkgLength(b[2:])
			name, terms := p.nameString(body, scope)
			p.termList(terms, name)
			b = rest
		default:
			p.t.Fatalf("AML opcode %#x not expected in a TermList", b[0])
		}
	}
}

func (p *amlParser) dataObject(b []byte) (any, []byte) {
	p.t.Helper()
	le := binary.LittleEndian
	need := func(n int) {
		if len(b) < n {
			p.t.Fatalf("AML truncated: need %d bytes, have %d", n, len(b))
		}
	}
	need(1)
	switch b[0] {
	case 0x00:
		return uint64(0), b[1:]
	case 0x01:
		return uint64(1), b[1:]
	case 0xff:
		return ^uint64(0), b[1:]
	case 0x0a:
		need(2)
		return uint64(b[1]), b[2:]
	case 0x0b:
		need(3)
		return uint64(le.Uint16(b[1:])), b[3:]
	case 0x0c:
		need(5)
		return uint64(le.Uint32(b[1:])), b[5:]
	case 0x0e:
		need(9)
		return le.Uint64(b[1:]), b[9:]
	case 0x12: // PackageOp
		body, rest := p.pkgLength(b[1:])
		if len(body) == 0 {
			p.t.Fatal("package without NumElements")
		}
		n := int(body[0])
		elems := []any{}
		body = body[1:]
		for len(body) > 0 {
			var e any
			e, body = p.dataObject(body)
			elems = append(elems, e)
		}
		if len(elems) != n {
			p.t.Errorf("package NumElements %d, %d elements", n, len(elems))
		}
		return elems, rest
	case 0x11: // BufferOp
		body, rest := p.pkgLength(b[1:])
		size, data := p.dataObject(body)
		if size != uint64(len(data)) {
			p.t.Errorf("buffer size %v, %d bytes", size, len(data))
		}
		return data, rest
	}
	p.t.Fatalf("AML data object opcode %#x not expected", b[0])
	return nil, nil
}

// TestAMLEncoding checks the encoders against bytes written out by hand
// from ACPI 6.5 chapter 20 (what iasl emits for the same ASL).
func TestAMLEncoding(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"Name (\\_S5_, Package () { 5, 5, Zero, Zero })",
			amlName(`\_S5_`, amlPackage(amlInt(5), amlInt(5), amlInt(0), amlInt(0))),
			[]byte{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00}},
		{"Name (_HID, EisaId (\"PNP0A03\"))",
			amlName("_HID", amlInt(eisaID("PNP0A03"))),
			[]byte{0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03}},
		{"Zero, One, 0xFF, 0x100, 0x10000, 2^32", bytes.Join([][]byte{amlInt(0), amlInt(1), amlInt(0xff), amlInt(0x100), amlInt(0x10000), amlInt(1 << 32)}, nil),
			[]byte{0x00, 0x01, 0x0a, 0xff, 0x0b, 0x00, 0x01, 0x0c, 0x00, 0x00, 0x01, 0x00, 0x0e, 0, 0, 0, 0, 1, 0, 0, 0}},
		{"Buffer () { 1, 2 }", amlBuffer([]byte{1, 2}), []byte{0x11, 0x05, 0x0a, 0x02, 1, 2}},
		{"Scope (\\_SB_) { Device (PCI0) {} }", amlScope(`\_SB_`, amlDevice("PCI0", nil)),
			[]byte{0x10, 0x0d, '\\', '_', 'S', 'B', '_', 0x5b, 0x82, 0x05, 'P', 'C', 'I', '0'}},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s:\n got % x\nwant % x", tt.name, tt.got, tt.want)
		}
	}
}

// TestAMLPkgLength checks the PkgLength encoding (§20.2.4) at every size
// boundary and decodes it back.
func TestAMLPkgLength(t *testing.T) {
	tests := []struct {
		n    int // bytes after the PkgLength
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3f}},
		{63, []byte{0x41, 0x04}}, // 63+2 = 65 = 0x41: low nibble 1, then 0x04
		{4093, []byte{0x4f, 0xff}},
		{4094, []byte{0x81, 0x00, 0x01}}, // 4094+3 = 0x1001
		{1<<20 - 4, []byte{0x8f, 0xff, 0xff}},
		{1<<20 - 3, []byte{0xc1, 0x00, 0x00, 0x01}}, // 2^20+1
	}
	for _, tt := range tests {
		got := amlPkgLength(tt.n)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("amlPkgLength(%d) = % x, want % x", tt.n, got, tt.want)
			continue
		}
		p := &amlParser{t: t}
		enc := append(got, make([]byte, tt.n)...)
		body, rest := p.pkgLength(enc)
		if len(body) != tt.n || len(rest) != 0 {
			t.Errorf("decoding amlPkgLength(%d): body %d rest %d", tt.n, len(body), len(rest))
		}
	}
}

func TestEISAID(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want uint64
	}{
		{"PNP0A03", 0x030ad041}, // PCI host bridge
		{"PNP0A08", 0x080ad041}, // PCI Express host bridge
		{"PNP0501", 0x0105d041}, // 16550A UART
	} {
		if got := eisaID(tt.id); got != tt.want {
			t.Errorf("eisaID(%q) = %#x, want %#x", tt.id, got, tt.want)
		}
	}
}

func TestWriteACPIRejects(t *testing.T) {
	m := newMem(t, 64<<20)
	for _, tt := range []struct {
		name string
		cfg  ACPIConfig
		want string
	}{
		{"no vCPU", ACPIConfig{}, "vCPUs"},
		{"17 vCPUs", ACPIConfig{CPUs: 17}, "vCPUs"},
		{"empty window", ACPIConfig{CPUs: 1, PCI: &ACPIPCIHost{MemBase: 0xc0000000, MemEnd: 0xc0000000}}, "window"},
		{"window above 4 GiB", ACPIConfig{CPUs: 1, PCI: &ACPIPCIHost{MemBase: 0xc0000000, MemEnd: 1<<32 + 1}}, "window"},
		{"pin 0", ACPIConfig{CPUs: 1, PCI: testPCI(ACPIPCIRoute{Slot: 1, Pin: 0, GSI: 16})}, "route 0"},
		{"pin 5", ACPIConfig{CPUs: 1, PCI: testPCI(ACPIPCIRoute{Slot: 1, Pin: 5, GSI: 16})}, "route 0"},
		{"slot 32", ACPIConfig{CPUs: 1, PCI: testPCI(ACPIPCIRoute{Slot: 32, Pin: 1, GSI: 16})}, "route 0"},
		{"GSI 24", ACPIConfig{CPUs: 1, PCI: testPCI(ACPIPCIRoute{Slot: 1, Pin: 1, GSI: 16}, ACPIPCIRoute{Slot: 2, Pin: 1, GSI: 24})}, "route 1"},
	} {
		err := WriteACPI(m, tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: WriteACPI = %v, want an error about %q", tt.name, err, tt.want)
		}
	}
}

// TestACPILayout checks the fixed addresses against each other, against
// the largest tables and against the e820 map.
func TestACPILayout(t *testing.T) {
	if ACPIRSDPAddr%16 != 0 || ACPIRSDPAddr < 0xe0000 || ACPIRSDPAddr+36 > 0x100000 {
		t.Errorf("RSDP at %#x: Linux scans 16-byte boundaries of [0xe0000, 0x100000)", ACPIRSDPAddr)
	}
	if ACPIFACSAddr%64 != 0 {
		t.Errorf("FACS at %#x is not 64-byte aligned", ACPIFACSAddr)
	}
	big := ACPIConfig{CPUs: MaxCPUs}
	slots := []struct {
		name       string
		addr, next uint64
		size       int
	}{
		{"RSDP", ACPIRSDPAddr, ACPIFACSAddr, len(buildRSDP())},
		{"FACS", ACPIFACSAddr, ACPIXSDTAddr, len(buildFACS())},
		{"XSDT", ACPIXSDTAddr, ACPIRSDTAddr, len(buildXSDT(make([]uint64, 2)))},
		{"RSDT", ACPIRSDTAddr, ACPIFADTAddr, len(buildRSDT(make([]uint32, 2)))},
		{"FADT", ACPIFADTAddr, ACPIMADTAddr, len(buildFADT())},
		{"MADT", ACPIMADTAddr, ACPIDSDTAddr, len(buildMADT(big.CPUs))},
	}
	for _, s := range slots {
		if s.addr+uint64(s.size) > s.next {
			t.Errorf("%s [%#x, %#x) runs into the next table at %#x", s.name, s.addr, s.addr+uint64(s.size), s.next)
		}
	}
	// A full bus still fits: 31 devices, one route each.
	var routes []ACPIPCIRoute
	for s := uint8(1); s < 32; s++ {
		routes = append(routes, ACPIPCIRoute{Slot: s, Pin: 4, GSI: 23})
	}
	big.PCI = testPCI(routes...)
	if n := uint64(len(buildDSDT(big))); ACPIDSDTAddr+n > ACPIAreaEnd {
		t.Errorf("largest DSDT is %d bytes, room for %d", n, ACPIAreaEnd-ACPIDSDTAddr)
	}
	for _, size := range []uint64{16 << 20, 5 << 30} {
		m := newMem(t, size)
		for _, e := range E820Map(m.Regions()) {
			if e.Type == E820RAM && (Range{Start: e.Addr, End: e.Addr + e.Size}).Overlaps(Range{Start: ACPIAreaStart, End: ACPIAreaEnd}) {
				t.Errorf("%d MiB guest: e820 RAM [%#x, %#x) overlaps the ACPI area", size>>20, e.Addr, e.Addr+e.Size)
			}
		}
	}
}
