package boot

import (
	"encoding/binary"
	"testing"

	"godwit/vmm/memory"
)

// newMem returns size bytes of guest RAM, closed when the test ends.
func newMem(t testing.TB, size uint64) *memory.Memory {
	t.Helper()
	m, err := memory.New(size)
	if err != nil {
		t.Fatalf("memory.New(%#x): %v", size, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fakeKernel describes a synthetic bzImage: a setup header with the given
// fields (offsets from boot.rst, written literally here so the test does not
// trust the package's constants) and a recognisable protected-mode payload.
type fakeKernel struct {
	setupSects      uint8
	bootFlag        uint16
	magic           uint32
	headerJump      uint8 // byte 0x201: the header ends at 0x202 + this
	version         uint16
	loadflags       uint8
	xloadflags      uint16
	initSize        uint32
	cmdlineSize     uint32
	initrdAddrMax   uint32
	kernelAlignment uint32
	relocatable     uint8
	prefAddress     uint64
	payload         []byte
	syssize         uint32 // 0: computed from payload
}

// defaultFake returns a well-formed 64-bit relocatable kernel, protocol
// 2.15, that needs 20 MiB of RAM (pref_address 16 MiB + init_size 4 MiB).
func defaultFake() fakeKernel {
	payload := make([]byte, 64<<10)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	return fakeKernel{
		setupSects:      3,
		bootFlag:        0xaa55,
		magic:           0x53726448,
		headerJump:      0x6a, // header ends at 0x26c, as in real kernels
		version:         0x020f,
		loadflags:       0x01,
		xloadflags:      0x03,
		initSize:        4 << 20,
		cmdlineSize:     2047,
		initrdAddrMax:   0x7fffffff,
		kernelAlignment: 0x200000,
		relocatable:     1,
		prefAddress:     0x1000000,
		payload:         payload,
	}
}

// build returns the image bytes.
func (f fakeKernel) build() []byte {
	sects := int(f.setupSects)
	if sects == 0 {
		sects = 4
	}
	setup := (sects + 1) * 512
	img := make([]byte, setup+len(f.payload))
	copy(img[setup:], f.payload)
	le := binary.LittleEndian
	img[0x1f1] = f.setupSects
	sys := f.syssize
	if sys == 0 {
		sys = uint32(len(f.payload) / 16)
	}
	le.PutUint32(img[0x1f4:], sys)
	le.PutUint16(img[0x1fe:], f.bootFlag)
	img[0x200], img[0x201] = 0xeb, f.headerJump
	le.PutUint32(img[0x202:], f.magic)
	le.PutUint16(img[0x206:], f.version)
	img[0x211] = f.loadflags
	le.PutUint32(img[0x214:], 0x100000)
	le.PutUint32(img[0x22c:], f.initrdAddrMax)
	le.PutUint32(img[0x230:], f.kernelAlignment)
	img[0x234] = f.relocatable
	le.PutUint16(img[0x236:], f.xloadflags)
	le.PutUint32(img[0x238:], f.cmdlineSize)
	le.PutUint64(img[0x258:], f.prefAddress)
	le.PutUint32(img[0x260:], f.initSize)
	// A field the loader must copy through untouched: kernel_info_offset.
	le.PutUint32(img[0x268:], 0x12345)
	return img
}

// readBytes reads n bytes of guest memory at gpa or fails the test.
func readBytes(t testing.TB, m *memory.Memory, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := m.Read(gpa, b); err != nil {
		t.Fatalf("reading %#x+%#x: %v", gpa, n, err)
	}
	return b
}
