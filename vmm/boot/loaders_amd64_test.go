package boot

import (
	"bytes"
	"strings"
	"testing"
)

func TestLoadBootSector(t *testing.T) {
	tests := []struct {
		name string
		size int
		want string // error substring; "" = success
	}{
		{"one byte", 1, ""},
		{"512-byte sector without signature", 512, ""},
		{"64 KiB", 64 << 10, ""},
		{"64 KiB + 1", 64<<10 + 1, "65537 bytes, at most 65536"},
		{"empty", 0, "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(t, 4<<20)
			img := bytes.Repeat([]byte{0x90}, tc.size)
			entry, err := LoadBootSector(m, img)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("LoadBootSector = %v, want error containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := entry.Regs
			if entry.Mode != RealMode || r.RIP != 0x7c00 || r.RDX != 0x80 || r.RSP != 0x7c00 || r.RFLAGS != 2 {
				t.Errorf("entry = %+v", entry)
			}
			if got := readBytes(t, m, 0x7c00, uint64(tc.size)); !bytes.Equal(got, img) {
				t.Error("image not at 0x7c00")
			}
		})
	}
}

func TestLoadFlat64(t *testing.T) {
	// The test guest's constants (package test/guest).
	const load, stack, param = 0x100000, 0x80000, 0x5000
	img := bytes.Repeat([]byte{0xf4}, 8192) // hlt
	tests := []struct {
		name             string
		ram              uint64
		image            []byte
		load, stack, rsi uint64
		want             string
	}{
		{name: "test guest", image: img, load: load, stack: stack, rsi: param},
		{name: "at the end of low RAM", ram: 4 << 20, image: img, load: 4<<20 - 8192, stack: stack, rsi: param},
		{name: "empty", image: nil, load: load, stack: stack, want: "empty"},
		{name: "past the end of RAM", ram: 4 << 20, image: img, load: 4<<20 - 4096, stack: stack, want: "does not fit"},
		{name: "load address beyond RAM", image: img, load: 1 << 40, stack: stack, want: "does not fit"},
		{name: "over the parameter block", image: img, load: 0x5000, stack: stack, want: "test-guest parameter block"},
		{name: "over the page directories", image: img, load: 0x30000, stack: stack, want: "page directories"},
		{name: "over the MP table", image: img, load: 0x9e000, stack: stack, want: "MP table"},
		{name: "over the zero page", image: img, load: 0x2000, stack: stack, want: "PDPT"},
		{name: "stack over the image", image: img, load: load, stack: load + 0x1000, want: "stack [0xfd000, 0x101000) overlaps the flat image"},
		{name: "stack over the page directories", image: img, load: load, stack: 0x40000, want: "overlaps the page directories"},
		{name: "stack misaligned", image: img, load: load, stack: stack - 8, want: "16-byte aligned"},
		{name: "stack beyond RAM", ram: 4 << 20, image: img, load: load, stack: 8 << 20, want: "16-byte aligned and in"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ram := tc.ram
			if ram == 0 {
				ram = 64 << 20
			}
			m := newMem(t, ram)
			entry, err := LoadFlat64(m, tc.image, tc.load, tc.stack, tc.rsi)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("LoadFlat64 = %v, want error containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := entry.Regs
			if entry.Mode != LongMode || r.RIP != tc.load || r.RSP != tc.stack || r.RSI != tc.rsi || r.RFLAGS != 2 ||
				r.RAX|r.RBX|r.RCX|r.RDX|r.RDI|r.RBP|r.R8|r.R15 != 0 {
				t.Errorf("entry = %+v", entry)
			}
			if got := readBytes(t, m, tc.load, uint64(len(tc.image))); !bytes.Equal(got, tc.image) {
				t.Error("image not at its load address")
			}
			if pa, ok := walk(t, m, tc.load); !ok || pa != tc.load {
				t.Errorf("load address not identity-mapped: %#x %v", pa, ok)
			}
		})
	}
}
