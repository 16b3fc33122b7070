package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadLinuxZeroPage(t *testing.T) {
	m := newMem(t, 256<<20)
	f := defaultFake()
	img := f.build()
	initrd := bytes.Repeat([]byte("initrd!"), 100000) // 700000 bytes
	const cmdline = "console=ttyS0 reboot=k panic=1"

	entry, err := LoadLinux(m, img, initrd, cmdline)
	if err != nil {
		t.Fatal(err)
	}
	if entry.Mode != LongMode || entry.Regs.RIP != 0x100200 || entry.Regs.RSI != ZeroPageAddr ||
		entry.Regs.RFLAGS != 2 || entry.Regs.RSP != StackTop {
		t.Errorf("entry = %+v", entry)
	}
	if got := readBytes(t, m, 0x100000, uint64(len(f.payload))); !bytes.Equal(got, f.payload) {
		t.Error("protected-mode payload not at 0x100000")
	}
	if got := readBytes(t, m, CmdlineAddr, uint64(len(cmdline)+1)); string(got) != cmdline+"\x00" {
		t.Errorf("command line = %q", got)
	}

	wantInitrd := uint64(256<<20-len(initrd)) &^ 0xfff
	zp := readBytes(t, m, ZeroPageAddr, 4096)
	le := binary.LittleEndian
	u8 := func(off int) uint64 { return uint64(zp[off]) }
	u16 := func(off int) uint64 { return uint64(le.Uint16(zp[off:])) }
	u32 := func(off int) uint64 { return uint64(le.Uint32(zp[off:])) }
	u64 := func(off int) uint64 { return le.Uint64(zp[off:]) }
	fields := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"setup_sects (copied)", u8(0x1f1), 3},
		{"vid_mode", u16(0x1fa), 0xffff},
		{"boot_flag (copied)", u16(0x1fe), 0xaa55},
		{"header magic (copied)", u32(0x202), 0x53726448},
		{"version (copied)", u16(0x206), 0x020f},
		{"type_of_loader", u8(0x210), 0xff},
		{"loadflags LOADED_HIGH|CAN_USE_HEAP", u8(0x211), 0x81},
		{"code32_start", u32(0x214), 0x100000},
		{"ramdisk_image", u32(0x218), wantInitrd},
		{"ramdisk_size", u32(0x21c), uint64(len(initrd))},
		{"heap_end_ptr", u16(0x224), 0xfe00},
		{"ext_loader_ver", u8(0x226), 0},
		{"cmd_line_ptr", u32(0x228), CmdlineAddr},
		{"initrd_addr_max (copied)", u32(0x22c), 0x7fffffff},
		{"kernel_alignment (copied)", u32(0x230), 0x200000},
		{"xloadflags (copied)", u16(0x236), 3},
		{"cmdline_size (copied)", u32(0x238), 2047},
		{"setup_data", u64(0x250), 0},
		{"pref_address (copied)", u64(0x258), 0x1000000},
		{"init_size (copied)", u32(0x260), 4 << 20},
		{"kernel_info_offset (copied)", u32(0x268), 0x12345},
		{"ext_ramdisk_image", u32(0x0c0), 0},
		{"ext_ramdisk_size", u32(0x0c4), 0},
		{"ext_cmd_line_ptr", u32(0x0c8), 0},
		{"sentinel", u8(0x1ef), 0},
		{"e820_entries", u8(0x1e8), 3},
		{"screen_info (zero)", u64(0), 0},
	}
	for _, f := range fields {
		if f.got != f.want {
			t.Errorf("%s = %#x, want %#x", f.name, f.got, f.want)
		}
	}
	if got := readBytes(t, m, wantInitrd, uint64(len(initrd))); !bytes.Equal(got, initrd) {
		t.Error("initrd contents not at ramdisk_image")
	}
	if pa, ok := walk(t, m, 0x100200); !ok || pa != 0x100200 {
		t.Errorf("entry point not identity-mapped: %#x %v", pa, ok)
	}
}

// zeroPageE820 decodes the e820 table of the zero page in m.
func zeroPageE820(t *testing.T, zp []byte) []E820Entry {
	t.Helper()
	n := int(zp[0x1e8])
	var out []E820Entry
	for i := range n {
		e := zp[0x2d0+20*i:]
		out = append(out, E820Entry{
			Addr: binary.LittleEndian.Uint64(e),
			Size: binary.LittleEndian.Uint64(e[8:]),
			Type: binary.LittleEndian.Uint32(e[16:]),
		})
	}
	return out
}

func TestLoadLinuxE820(t *testing.T) {
	tests := []struct {
		name string
		ram  uint64
		want []E820Entry
	}{
		{"256 MiB", 256 << 20, []E820Entry{
			{0, 0x9f000, 1},
			{0x9f000, 0x1000, 2},
			{0x100000, 255 << 20, 1},
		}},
		{"5 GiB", 5 << 30, []E820Entry{
			{0, 0x9f000, 1},
			{0x9f000, 0x1000, 2},
			{0x100000, 3<<30 - 1<<20, 1},
			{4 << 30, 2 << 30, 1},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(t, tc.ram)
			if _, err := LoadLinux(m, defaultFake().build(), nil, ""); err != nil {
				t.Fatal(err)
			}
			got := zeroPageE820(t, readBytes(t, m, ZeroPageAddr, 4096))
			if !slices.Equal(got, tc.want) {
				t.Errorf("e820 = %+v\nwant   %+v", got, tc.want)
			}
			if e := E820Map(m.Regions()); !slices.Equal(e, tc.want) {
				t.Errorf("E820Map = %+v", e)
			}
		})
	}
}

func TestLoadLinuxInitrdPlacement(t *testing.T) {
	tests := []struct {
		name      string
		ram       uint64
		addrMax   uint32
		size      int
		wantStart uint64
	}{
		{"top of 256 MiB", 256 << 20, 0x7fffffff, 1<<20 + 123, (256<<20 - (1<<20 + 123)) &^ 0xfff},
		{"page-sized at top", 256 << 20, 0x7fffffff, 8192, 256<<20 - 8192},
		{"below initrd_addr_max 64 MiB", 256 << 20, 0x03ffffff, 5000, (64<<20 - 5000) &^ 0xfff},
		{"below the MMIO hole in 5 GiB", 5 << 30, 0xffffffff, 4096, 3<<30 - 4096},
		{"just above the kernel", 24 << 20, 0x7fffffff, 4 << 20, 20 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(t, tc.ram)
			f := defaultFake()
			f.initrdAddrMax = tc.addrMax
			initrd := bytes.Repeat([]byte{0xa5}, tc.size)
			if _, err := LoadLinux(m, f.build(), initrd, "quiet"); err != nil {
				t.Fatal(err)
			}
			zp := readBytes(t, m, ZeroPageAddr, 4096)
			start := uint64(binary.LittleEndian.Uint32(zp[0x218:]))
			size := uint64(binary.LittleEndian.Uint32(zp[0x21c:]))
			if start != tc.wantStart || size != uint64(tc.size) {
				t.Errorf("initrd at %#x size %#x, want %#x size %#x", start, size, tc.wantStart, tc.size)
			}
			if start%4096 != 0 || start+size-1 > uint64(tc.addrMax) || start < 20<<20 {
				t.Errorf("initrd [%#x, %#x) misplaced", start, start+size)
			}
			if got := readBytes(t, m, start, size); !bytes.Equal(got, initrd) {
				t.Error("initrd contents differ")
			}
		})
	}
}

func TestLoadLinuxErrors(t *testing.T) {
	mutate := func(fn func(*fakeKernel)) []byte {
		f := defaultFake()
		fn(&f)
		return f.build()
	}
	good := defaultFake().build()
	tests := []struct {
		name    string
		ram     uint64
		kernel  []byte
		initrd  []byte
		cmdline string
		want    string
		isImage bool // error wraps ErrKernelImage
	}{
		{name: "empty", kernel: nil, want: "kernel: image truncated", isImage: true},
		{name: "too short for a header", kernel: good[:0x100], want: "kernel: image truncated", isImage: true},
		{name: "no magic", kernel: mutate(func(f *fakeKernel) { f.magic = 0x12345678 }), want: "kernel: not a bzImage (no HdrS magic)", isImage: true},
		{name: "header truncated", kernel: good[:0x250], want: "kernel: image truncated", isImage: true},
		{name: "header ends early", kernel: mutate(func(f *fakeKernel) { f.headerJump = 0x20 }), want: "setup header ends at 0x222", isImage: true},
		{name: "old protocol", kernel: mutate(func(f *fakeKernel) { f.version = 0x020a }), want: "kernel: boot protocol 2.10 too old", isImage: true},
		{name: "no boot flag", kernel: mutate(func(f *fakeKernel) { f.bootFlag = 0 }), want: "boot flag", isImage: true},
		{name: "zImage", kernel: mutate(func(f *fakeKernel) { f.loadflags = 0 }), want: "zImage", isImage: true},
		{name: "32-bit only", kernel: mutate(func(f *fakeKernel) { f.xloadflags = 2 }), want: "XLF_KERNEL_64", isImage: true},
		{name: "setup_sects beyond file", kernel: good[:4*512], want: "kernel: image truncated: setup code needs 2048 bytes", isImage: true},
		{name: "setup_sects 255", kernel: mutate(func(f *fakeKernel) { f.payload = f.payload[:1000]; f.setupSects = 255 })[:200*512], want: "setup code needs 131072 bytes", isImage: true},
		{name: "payload shorter than syssize", kernel: good[:len(good)-1000], want: "kernel: image truncated: protected-mode kernel has", isImage: true},
		{name: "kernel_alignment not a power of two", kernel: mutate(func(f *fakeKernel) { f.kernelAlignment = 0x300000 }), want: "kernel_alignment 0x300000", isImage: true},
		{name: "cmdline longer than cmdline_size", kernel: mutate(func(f *fakeKernel) { f.cmdlineSize = 10 }), cmdline: "console=ttyS0", want: "at most 10 (cmdline_size)"},
		{name: "cmdline longer than the buffer", kernel: mutate(func(f *fakeKernel) { f.cmdlineSize = 1 << 20 }), cmdline: strings.Repeat("x", 4096), want: "godwit passes at most 4095"},
		{name: "cmdline with NUL", kernel: good, cmdline: "a\x00b", want: "NUL"},
		{name: "RAM too small for the kernel", ram: 16 << 20, kernel: good, want: "memory too small for the kernel: need at least 20 MiB"},
		{name: "RAM too small for init_size", ram: 64 << 20, kernel: mutate(func(f *fakeKernel) { f.initSize = 60 << 20 }), want: "need at least 76 MiB"},
		{name: "non-relocatable at pref_address", ram: 32 << 20, kernel: mutate(func(f *fakeKernel) { f.relocatable = 0; f.prefAddress = 0x2000000 }), want: "need at least 36 MiB"},
		{name: "huge pref_address", kernel: mutate(func(f *fakeKernel) { f.prefAddress = ^uint64(0) - 10 }), want: "memory too small for the kernel"},
		{name: "RAM too small for the initrd", ram: 32 << 20, kernel: good, initrd: make([]byte, 16<<20), want: "memory too small for the kernel and initrd: need at least 36 MiB"},
		{name: "initrd above initrd_addr_max", kernel: mutate(func(f *fakeKernel) { f.initrdAddrMax = 0x01ffffff }), initrd: make([]byte, 16<<20), want: "initrd_addr_max 0x1ffffff"},
		{name: "initrd_addr_max below the kernel", kernel: mutate(func(f *fakeKernel) { f.initrdAddrMax = 0xfffff }), initrd: []byte{1}, want: "does not fit between the kernel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ram := tc.ram
			if ram == 0 {
				ram = 256 << 20
			}
			m := newMem(t, ram)
			_, err := LoadLinux(m, tc.kernel, tc.initrd, tc.cmdline)
			if err == nil {
				t.Fatalf("LoadLinux succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if got := errors.Is(err, ErrKernelImage); got != tc.isImage {
				t.Errorf("errors.Is(err, ErrKernelImage) = %v, want %v", got, tc.isImage)
			}
		})
	}
}

// realKernel returns the path of a real bzImage to test with: $GODWIT_KERNEL,
// else the first of /boot/vmlinuz-* and vmlinuz*/bzImage* under
// $HOME/.cache/godwit, or "" if there is none.
func realKernel() string {
	if p := os.Getenv("GODWIT_KERNEL"); p != "" {
		return p
	}
	var cands []string
	if m, _ := filepath.Glob("/boot/vmlinuz-*"); len(m) > 0 {
		cands = append(cands, m...)
	}
	if home, err := os.UserHomeDir(); err == nil {
		root := filepath.Join(home, ".cache", "godwit")
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n := d.Name()
				if strings.HasPrefix(n, "vmlinuz") || strings.HasPrefix(n, "bzImage") {
					cands = append(cands, p)
				}
			}
			return nil
		})
	}
	for _, p := range cands {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

func TestLoadLinuxRealKernel(t *testing.T) {
	path := realKernel()
	if path == "" {
		t.Skip("no real kernel: set GODWIT_KERNEL or put one under ~/.cache/godwit")
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("reading %s: %v", path, err)
	}
	m := newMem(t, 256<<20)
	entry, err := LoadLinux(m, img, []byte("not really a cpio"), "console=ttyS0 panic=-1")
	if err != nil {
		t.Fatalf("LoadLinux(%s): %v", path, err)
	}
	if entry.Mode != LongMode || entry.Regs.RIP != 0x100200 || entry.Regs.RSI != ZeroPageAddr {
		t.Errorf("entry = %+v", entry)
	}
	setup := (int(img[0x1f1]) + 1) * 512
	if got := readBytes(t, m, 0x100000, 4096); !bytes.Equal(got, img[setup:setup+4096]) {
		t.Error("protected-mode kernel not at 0x100000")
	}
	zp := readBytes(t, m, ZeroPageAddr, 4096)
	t.Logf("%s: protocol %#x, init_size %d MiB, pref_address %#x, cmdline_size %d",
		path, binary.LittleEndian.Uint16(zp[0x206:]), binary.LittleEndian.Uint32(zp[0x260:])>>20,
		binary.LittleEndian.Uint64(zp[0x258:]), binary.LittleEndian.Uint32(zp[0x238:]))
	if zp[0x210] != 0xff || uint64(binary.LittleEndian.Uint32(zp[0x228:])) != CmdlineAddr {
		t.Error("zero page loader fields not patched")
	}

	// A distribution kernel decompresses at 16 MiB and needs tens of MiB
	// more: 16 MiB of RAM is too little, and the error says how much is
	// needed.
	_, err = LoadLinux(newMem(t, 16<<20), img, nil, "")
	if err == nil || !strings.Contains(err.Error(), "memory too small for the kernel: need at least") {
		t.Errorf("LoadLinux with 16 MiB = %v, want a memory-too-small error", err)
	} else {
		t.Log(err)
	}
}

func FuzzLoadLinux(f *testing.F) {
	good := defaultFake().build()
	f.Add(good, uint16(0), "console=ttyS0")
	f.Add(good[:0x300], uint16(100), "")
	f.Add(good[:0x264], uint16(0), "x")
	f.Add([]byte("HdrS"), uint16(1), "")
	m := newMem(f, 64<<20)
	f.Fuzz(func(t *testing.T, kernel []byte, initrdLen uint16, cmdline string) {
		var initrd []byte
		if initrdLen > 0 {
			initrd = make([]byte, initrdLen)
		}
		entry, err := LoadLinux(m, kernel, initrd, cmdline)
		if err != nil {
			return
		}
		if entry.Mode != LongMode || entry.Regs.RIP != KernelAddr+Kernel64EntryOffset {
			t.Errorf("accepted image gave entry %+v", entry)
		}
	})
}
