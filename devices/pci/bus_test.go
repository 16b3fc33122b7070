package pci

import (
	"bytes"
	"errors"
	"testing"

	"godwit/devices"
)

func newTestBus(t testing.TB) (*Bus, *testFn, *fakeMSI, map[uint8]*fakeLine) {
	t.Helper()
	lines := map[uint8]*fakeLine{}
	b, err := NewBus(BusConfig{INTx: func(gsi uint8) INTxLine {
		l := &fakeLine{}
		lines[gsi] = l
		return l
	}})
	if err != nil {
		t.Fatal(err)
	}
	msi := &fakeMSI{}
	fn := newTestFn(t, msi)
	slot, err := b.Add(fn)
	if err != nil {
		t.Fatal(err)
	}
	if slot != 1 {
		t.Fatalf("slot = %d, want 1", slot)
	}
	return b, fn, msi, lines
}

func TestConfigMechanism1(t *testing.T) {
	b, _, _, _ := newTestBus(t)
	io := b.ConfigIO()
	tests := []struct {
		name string
		addr uint32
		off  uint64
		size int
		want uint32
	}{
		{"host bridge IDs", cfgEnable, 4, 4, HostBridgeDevice<<16 | HostBridgeVendor},
		{"host bridge class", cfgEnable | RegRevisionID, 4, 4, classHostBridge << 8},
		{"device IDs", cfgEnable | 1<<11, 4, 4, 0x1044<<16 | 0x1af4},
		{"device ID word at 0xCFE", cfgEnable | 1<<11, 6, 2, 0x1044},
		{"byte at 0xCFD", cfgEnable | 1<<11, 5, 1, 0x1a},
		{"dword at 0xCFE clipped to the register", cfgEnable | 1<<11, 6, 4, 0xffff<<16 | 0x1044},
		{"empty slot", cfgEnable | 5<<11, 4, 4, 0xffffffff},
		{"function 1", cfgEnable | 1<<8, 4, 4, 0xffffffff},
		{"bus 1", cfgEnable | 1<<16, 4, 4, 0xffffffff},
		{"enable bit clear", 0, 4, 4, 0xffffffff},
		{"beyond config space header reads zero", cfgEnable | 1<<11 | 0xfc, 4, 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			io.Write(0, le32(tt.addr))
			d := make([]byte, tt.size)
			io.Read(tt.off, d)
			var got uint32
			for i := len(d) - 1; i >= 0; i-- {
				got = got<<8 | uint32(d[i])
			}
			if got != tt.want {
				t.Errorf("read = %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestConfigAddressRegister(t *testing.T) {
	b, _, _, _ := newTestBus(t)
	io := b.ConfigIO()
	tests := []struct {
		name  string
		write []byte
		off   uint64
		want  uint32
	}{
		{"dword write", le32(0x8000_0810), 0, 0x8000_0810},
		{"reserved and low bits cleared", le32(0xffff_ffff), 0, 0x80ff_fffc},
		// Linux's pci_check_type1 writes a byte to 0xCFB before probing.
		{"byte write ignored", []byte{1}, 3, 0},
		{"word write ignored", []byte{1, 2}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			io.Write(0, le32(0))
			io.Write(tt.off, tt.write)
			var d [4]byte
			io.Read(0, d[:])
			if got := le32val(d[:]); got != tt.want {
				t.Errorf("CONFIG_ADDRESS = %#x, want %#x", got, tt.want)
			}
		})
	}
	var d [1]byte
	io.Read(3, d[:])
	if d[0] != 0xff {
		t.Errorf("byte read of 0xCFB = %#x, want 0xff", d[0])
	}
}

func le32val(d []byte) uint32 {
	return uint32(d[0]) | uint32(d[1])<<8 | uint32(d[2])<<16 | uint32(d[3])<<24
}

func TestBARSizingAndAllocation(t *testing.T) {
	b, _, _, _ := newTestBus(t)
	tests := []struct {
		name      string
		reg       int
		wantAlloc uint32 // value after Add
		wantSize  uint32 // value after writing all ones
	}{
		{"BAR0 32-bit 4K", RegBAR0, 0xc000_0000, 0xffff_f000},
		{"BAR1 unimplemented", RegBAR0 + 4, 0, 0},
		{"BAR2 64-bit prefetchable 64K low", RegBAR0 + 8, 0xc001_0000 | barMem64 | barPrefetch, 0xffff_0000 | barMem64 | barPrefetch},
		{"BAR3 upper half", RegBAR0 + 12, 0, 0xffff_ffff},
		{"BAR5 unimplemented", RegBAR0 + 20, 0, 0},
		{"expansion ROM", RegExpansionROM, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cfgRead32(b, 1, tt.reg); got != tt.wantAlloc {
				t.Errorf("allocated = %#x, want %#x", got, tt.wantAlloc)
			}
			cfgWrite(b, 1, tt.reg, le32(0xffff_ffff))
			if got := cfgRead32(b, 1, tt.reg); got != tt.wantSize {
				t.Errorf("after all ones = %#x, want %#x", got, tt.wantSize)
			}
			cfgWrite(b, 1, tt.reg, le32(tt.wantAlloc))
			if got := cfgRead32(b, 1, tt.reg); got != tt.wantAlloc {
				t.Errorf("restored = %#x, want %#x", got, tt.wantAlloc)
			}
		})
	}
	if got := cfgRead32(b, 1, RegCommand) & 0xffff; got != CommandMemory {
		t.Errorf("command after Add = %#x, want memory enabled", got)
	}
}

func TestBARRelocationAndDecode(t *testing.T) {
	b, fn, _, _ := newTestBus(t)
	const bar2 = 0xc001_0000
	mmioWrite32(b, bar2+0x10, 0xdeadbeef)
	if got := le32val(fn.mem[1][0x10:]); got != 0xdeadbeef {
		t.Fatalf("BAR 2 write landed as %#x", got)
	}
	steps := []struct {
		name string
		do   func()
		addr uint64
		want uint32
	}{
		{"old address decodes", func() {}, bar2 + 0x10, 0xdeadbeef},
		{"memory disabled", func() { cfgWrite(b, 1, RegCommand, le16(0)) }, bar2 + 0x10, 0xffffffff},
		{"memory enabled", func() { cfgWrite(b, 1, RegCommand, le16(CommandMemory)) }, bar2 + 0x10, 0xdeadbeef},
		{"moved away: old address open", func() { cfgWrite(b, 1, RegBAR0+8, le32(0xd000_0000)) }, bar2 + 0x10, 0xffffffff},
		{"moved: new address decodes", func() {}, 0xd000_0010, 0xdeadbeef},
		{"moved above 4G: not decoded", func() { cfgWrite(b, 1, RegBAR0+12, le32(1)) }, 0xd000_0010, 0xffffffff},
		{"straddling the BAR end", func() { cfgWrite(b, 1, RegBAR0+12, le32(0)) }, 0xd000_fffe, 0xffffffff},
		{"last dword", func() {}, 0xd000_fffc, 0},
		{"below every BAR", func() {}, WindowBase + 0x5000, 0xffffffff},
	}
	for _, s := range steps {
		s.do()
		if got := mmioRead32(b, s.addr); got != s.want {
			t.Errorf("%s: read %#x = %#x, want %#x", s.name, s.addr, got, s.want)
		}
	}
}

func TestCommandAndINTx(t *testing.T) {
	b, fn, _, lines := newTestBus(t)
	routes := b.Routes()
	if len(routes) != 1 || routes[0] != (Route{Slot: 1, Pin: PinA, GSI: 17}) {
		t.Fatalf("routes = %+v", routes)
	}
	line := lines[17]
	if got := cfgRead32(b, 1, RegInterruptLine); got != PinA<<8|17 {
		t.Errorf("interrupt line/pin = %#x", got)
	}
	steps := []struct {
		name       string
		do         func()
		wantLevel  bool
		wantStatus bool
	}{
		{"assert", func() { fn.cs.SetINTx(true) }, true, true},
		{"INTx disable masks the line", func() { cfgWrite(b, 1, RegCommand, le16(CommandMemory|CommandINTxDisable)) }, false, true},
		{"re-enable restores it", func() { cfgWrite(b, 1, RegCommand, le16(CommandMemory)) }, true, true},
		{"deassert", func() { fn.cs.SetINTx(false) }, false, false},
		{"read-only command bits ignored", func() { cfgWrite(b, 1, RegCommand, le16(0xffff)) }, false, false},
	}
	for _, s := range steps {
		s.do()
		if lvl, _ := line.last(); lvl != s.wantLevel {
			t.Errorf("%s: level %v, want %v", s.name, lvl, s.wantLevel)
		}
		st := cfgRead32(b, 1, RegCommand) >> 16
		if (st&StatusINTx != 0) != s.wantStatus {
			t.Errorf("%s: status %#x", s.name, st)
		}
	}
	if got := cfgRead32(b, 1, RegCommand) & 0xffff; got != commandWritable {
		t.Errorf("command = %#x, want %#x", got, commandWritable)
	}
}

func TestCapabilityList(t *testing.T) {
	b, _, _, _ := newTestBus(t)
	if st := cfgRead32(b, 1, RegCommand) >> 16; st&StatusCapList == 0 {
		t.Fatal("capability list bit clear")
	}
	var ids []uint8
	ptr := cfgRead32(b, 1, RegCapPointer) & 0xff
	for n := 0; ptr != 0 && n < 48; n++ {
		v := cfgRead32(b, 1, int(ptr))
		ids = append(ids, uint8(v))
		ptr = v >> 8 & 0xff
	}
	if !bytes.Equal(ids, []byte{CapIDVendor, CapIDMSIX}) {
		t.Errorf("capability IDs = %x", ids)
	}
	// The vendor capability is read-only.
	cfgWrite(b, 1, HeaderSize+2, []byte{0x55})
	if got := cfgRead32(b, 1, HeaderSize) >> 16 & 0xff; got != 5 {
		t.Errorf("vendor capability byte 2 = %#x after write", got)
	}
	// The host bridge has none.
	if st := cfgRead32(b, 0, RegCommand) >> 16; st&StatusCapList != 0 {
		t.Error("host bridge reports capabilities")
	}
}

func TestAddErrors(t *testing.T) {
	tests := []struct {
		name string
		bar  BAR
	}{
		{"BAR larger than the window", BAR{Kind: BARMem64, Size: 1 << 31}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBus(BusConfig{})
			if err != nil {
				t.Fatal(err)
			}
			var bars [NumBARs]BAR
			bars[0] = tt.bar
			cs, err := NewConfigSpace(Header{BARs: bars})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Add(&HostBridge{cs: cs}); err == nil {
				t.Error("Add succeeded")
			}
		})
	}
	b, _ := NewBus(BusConfig{})
	for i := 1; i < MaxSlots; i++ {
		hb, _ := NewHostBridge()
		if _, err := b.Add(hb); err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
	}
	hb, _ := NewHostBridge()
	if _, err := b.Add(hb); err == nil {
		t.Error("33rd function accepted")
	}
}

func TestNewConfigSpaceErrors(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		caps []Capability
	}{
		{"size not power of two", Header{BARs: [NumBARs]BAR{{Kind: BARMem32, Size: 0x1800}}}, nil},
		{"size too small", Header{BARs: [NumBARs]BAR{{Kind: BARMem32, Size: 8}}}, nil},
		{"64-bit BAR in slot 5", Header{BARs: [NumBARs]BAR{5: {Kind: BARMem64, Size: 0x1000}}}, nil},
		{"64-bit BAR upper half used", Header{BARs: [NumBARs]BAR{{Kind: BARMem64, Size: 0x1000}, {Kind: BARMem32, Size: 0x1000}}}, nil},
		{"unknown kind", Header{BARs: [NumBARs]BAR{{Kind: 9, Size: 0x1000}}}, nil},
		{"bad pin", Header{InterruptPin: 5}, nil},
		{"capability too big", Header{}, []Capability{&StaticCapability{ID: 9, Body: make([]byte, 200)}}},
		{"nil capability", Header{}, []Capability{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewConfigSpace(tt.h, tt.caps...); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestStateRoundTrip(t *testing.T) {
	b, fn, _, lines := newTestBus(t)
	cfgWrite(b, 1, RegBAR0+8, le32(0xd000_0000))
	cfgWrite(b, 1, RegInterruptLine, []byte{9})
	fn.cs.SetINTx(true)
	io := b.ConfigIO()
	io.Write(0, le32(cfgEnable|1<<11|0x10))
	cs1, _ := fn.cs.SaveState()
	bus1, _ := b.SaveState()

	b2, fn2, _, lines2 := newTestBus(t)
	if err := fn2.cs.RestoreState(cs1); err != nil {
		t.Fatal(err)
	}
	if err := b2.RestoreState(bus1); err != nil {
		t.Fatal(err)
	}
	cs2, _ := fn2.cs.SaveState()
	bus2, _ := b2.SaveState()
	if !bytes.Equal(cs1, cs2) || !bytes.Equal(bus1, bus2) {
		t.Errorf("state differs after restore")
	}
	if lvl, n := lines2[17].last(); !lvl || n == 0 {
		t.Error("INTx level not re-driven on restore")
	}
	if lvl, _ := lines[17].last(); !lvl {
		t.Error("source line not asserted")
	}
	fn2.mem[1][0] = 0x42
	if got := mmioRead32(b2, 0xd000_0000); got != 0x42 {
		t.Errorf("restored BAR does not decode: %#x", got)
	}
}

func TestStateRejects(t *testing.T) {
	_, fn, _, _ := newTestBus(t)
	good, _ := fn.cs.SaveState()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(append([]byte(nil), good...), 0)},
		{"version", mut(func(b []byte) []byte { b[0] = 9; return b })},
		{"read-only command bits", mut(func(b []byte) []byte { b[3] = 0x80; return b })},
		{"flags", mut(func(b []byte) []byte { b[7] = 2; return b })},
		{"BAR type bits", mut(func(b []byte) []byte { b[8] |= 1; return b })},
		{"BAR below its alignment", mut(func(b []byte) []byte { b[9] = 0x08; return b })},
		{"unimplemented BAR", mut(func(b []byte) []byte { b[12+3] = 0xc0; return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fn.cs.RestoreState(tt.data)
			if !errors.Is(err, devices.ErrInvalidState) {
				t.Errorf("err = %v", err)
			}
			if now, _ := fn.cs.SaveState(); !bytes.Equal(now, good) {
				t.Error("state changed by a rejected restore")
			}
		})
	}
}

// TestOnDecode checks that BusConfig.OnDecode runs after every change of
// what the bus decodes, with the new BARs already visible.
func TestOnDecode(t *testing.T) {
	var fn *testFn
	var calls int
	var seen []BARMapping
	b, err := NewBus(BusConfig{OnDecode: func() {
		calls++
		if fn != nil {
			seen = fn.Config().BARs()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 { // the host bridge
		t.Fatalf("OnDecode calls after NewBus = %d, want 1", calls)
	}
	fn = newTestFn(t, nil)
	if _, err := b.Add(fn); err != nil {
		t.Fatal(err)
	}
	if calls != 2 || len(seen) != 2 {
		t.Fatalf("after Add: %d calls, BARs %+v", calls, seen)
	}
	saved, err := fn.Config().SaveState()
	if err != nil {
		t.Fatal(err)
	}
	cfgWrite(b, 1, RegBAR0, le32(0xd000_0000))
	if calls != 3 || seen[0].Base != 0xd000_0000 {
		t.Fatalf("after moving BAR 0: %d calls, BARs %+v", calls, seen)
	}
	cfgWrite(b, 1, RegCommand, le16(0))
	if calls != 4 || len(seen) != 0 {
		t.Fatalf("after disabling Memory Space: %d calls, BARs %+v", calls, seen)
	}
	cfgWrite(b, 1, RegCacheLineSize, []byte{0x10})
	if calls != 4 {
		t.Fatalf("a write that changes no BAR called OnDecode (%d calls)", calls)
	}
	if err := fn.Config().RestoreState(saved); err != nil {
		t.Fatal(err)
	}
	if calls != 5 || len(seen) != 2 || seen[0].Base == 0xd000_0000 {
		t.Fatalf("after restore: %d calls, BARs %+v", calls, seen)
	}
}
