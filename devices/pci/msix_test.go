package pci

import (
	"bytes"
	"errors"
	"testing"

	"godwit/devices"
)

// msixCap returns the config offset of the MSI-X capability of slot 1.
func msixCap(t *testing.T, b *Bus) int {
	t.Helper()
	ptr := int(cfgRead32(b, 1, RegCapPointer) & 0xff)
	for n := 0; ptr != 0 && n < 48; n++ {
		v := cfgRead32(b, 1, ptr)
		if v&0xff == CapIDMSIX {
			return ptr
		}
		ptr = int(v >> 8 & 0xff)
	}
	t.Fatal("no MSI-X capability")
	return 0
}

func TestMSIXCapability(t *testing.T) {
	b, _, _, _ := newTestBus(t)
	c := msixCap(t, b)
	tests := []struct {
		reg  int
		want uint32
	}{
		{c, 3<<16 | uint32(cfgRead32(b, 1, c)&0xff00) | CapIDMSIX}, // table size N-1 = 3
		{c + 4, 0x800 | 0},
		{c + 8, 0xc00 | 0},
	}
	for _, tt := range tests {
		if got := cfgRead32(b, 1, tt.reg); got != tt.want {
			t.Errorf("cap+%d = %#x, want %#x", tt.reg-c, got, tt.want)
		}
	}
	// Table size is read-only; only enable and function mask stick.
	cfgWrite(b, 1, c+2, le16(0xffff))
	if got := cfgRead32(b, 1, c) >> 16; got != 0xc003 {
		t.Errorf("message control = %#x, want 0xc003", got)
	}
}

func TestMSIXDelivery(t *testing.T) {
	const bar0 = 0xc000_0000
	b, fn, msi, _ := newTestBus(t)
	c := msixCap(t, b)
	entry := func(v int) uint64 { return bar0 + 0x800 + uint64(v)*MSIXEntrySize }
	// Program vector 1: address 0xfee00000, data 0x41.
	mmioWrite32(b, entry(1), 0xfee0_0000)
	mmioWrite32(b, entry(1)+4, 0)
	mmioWrite32(b, entry(1)+8, 0x41)
	pba := func() uint32 { return mmioRead32(b, bar0+0xc00) }

	steps := []struct {
		name     string
		do       func() bool
		wantRet  bool
		wantMsgs int
		wantPBA  uint32
	}{
		{"disabled: caller falls back", func() bool { return fn.msix.Notify(1) }, false, 0, 0},
		{"enable", func() bool { cfgWrite(b, 1, c+2, le16(msixEnable)); return true }, true, 0, 0},
		{"entry masked at reset: pending", func() bool { return fn.msix.Notify(1) }, true, 0, 2},
		{"unmask entry delivers pending", func() bool { mmioWrite32(b, entry(1)+12, 0); return true }, true, 1, 0},
		{"unmasked: delivered", func() bool { return fn.msix.Notify(1) }, true, 1, 0},
		{"function mask", func() bool { cfgWrite(b, 1, c+2, le16(msixEnable|msixFunctionMsk)); return fn.msix.Notify(1) }, true, 0, 2},
		{"function unmask delivers", func() bool { cfgWrite(b, 1, c+3, []byte{msixEnable >> 8}); return true }, true, 1, 0},
		{"vector out of range dropped", func() bool { return fn.msix.Notify(99) }, true, 0, 0},
		{"PBA is read-only", func() bool { fn.msix.Notify(0); mmioWrite32(b, bar0+0xc00, 0); return true }, true, 0, 1},
	}
	for _, s := range steps {
		if got := s.do(); got != s.wantRet {
			t.Errorf("%s: returned %v", s.name, got)
		}
		msgs := msi.take()
		if len(msgs) != s.wantMsgs {
			t.Errorf("%s: %d messages, want %d", s.name, len(msgs), s.wantMsgs)
		}
		for _, m := range msgs {
			if m != (msiMsg{0xfee0_0000, 0x41}) {
				t.Errorf("%s: message %+v", s.name, m)
			}
		}
		if got := pba(); got != s.wantPBA {
			t.Errorf("%s: PBA = %#x, want %#x", s.name, got, s.wantPBA)
		}
	}
	if got := mmioRead32(b, entry(1)+12); got != 0 {
		t.Errorf("vector control = %#x", got)
	}
	mmioWrite32(b, entry(2)+12, 0xffff_fffe)
	if got := mmioRead32(b, entry(2)+12); got != 0 {
		t.Errorf("reserved vector control bits stuck: %#x", got)
	}
}

func TestMSIXState(t *testing.T) {
	_, fn, _, _ := newTestBus(t)
	fn.msix.WriteCap(2, le16(msixEnable))
	fn.msix.WriteBAR(0x810, le32(0xfee0_1000))
	fn.msix.Notify(1)
	good, _ := fn.msix.SaveState()

	_, fn2, _, _ := newTestBus(t)
	if err := fn2.msix.RestoreState(good); err != nil {
		t.Fatal(err)
	}
	again, _ := fn2.msix.SaveState()
	if !bytes.Equal(good, again) {
		t.Fatal("save→restore→save differs")
	}
	if !fn2.msix.Enabled() {
		t.Error("enable not restored")
	}
	mut := func(f func(b []byte)) []byte { b := append([]byte(nil), good...); f(b); return b }
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-1]},
		{"version", mut(func(b []byte) { b[0] = 2 })},
		{"control read-only bits", mut(func(b []byte) { b[2] = 3 })},
		{"vector count", mut(func(b []byte) { b[4] = 5 })},
		{"vector control reserved", mut(func(b []byte) { b[6+12+1] = 1 })},
		{"pending beyond table", mut(func(b []byte) { b[len(b)-8] = 0x10 })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := fn2.msix.RestoreState(tt.data); !errors.Is(err, devices.ErrInvalidState) {
				t.Errorf("err = %v", err)
			}
			if now, _ := fn2.msix.SaveState(); !bytes.Equal(now, good) {
				t.Error("state changed")
			}
		})
	}
}

func TestNewMSIXErrors(t *testing.T) {
	msi := &fakeMSI{}
	tests := []struct {
		name         string
		vectors, bar int
		table, pba   uint64
		out          MSIDelivery
	}{
		{"no vectors", 0, 0, 0, 0x800, msi},
		{"too many", MSIXMaxVectors + 1, 0, 0, 0x8000, msi},
		{"bad BAR", 1, 6, 0, 0x800, msi},
		{"unaligned", 1, 0, 4, 0x800, msi},
		{"overlap", 4, 0, 0, 0x20, msi},
		{"nil delivery", 1, 0, 0, 0x800, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewMSIX(tt.vectors, tt.bar, tt.table, tt.pba, tt.out); err == nil {
				t.Error("accepted")
			}
		})
	}
}
