package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Offsets of struct setup_header fields in a bzImage file and in struct
// boot_params (Documentation/arch/x86/boot.rst, "THE REAL-MODE KERNEL
// HEADER", and zero-page.rst); the header starts at 0x1f1 in both.
const (
	offSetupSects      = 0x1f1 // u8, 0 means 4
	offSyssize         = 0x1f4 // u32, protected-mode size in 16-byte paragraphs
	offVidMode         = 0x1fa // u16
	offBootFlag        = 0x1fe // u16, 0xAA55
	offJump            = 0x200 // u16, short jump; byte 0x201 gives the header end
	offHeader          = 0x202 // u32, "HdrS"
	offVersion         = 0x206 // u16
	offTypeOfLoader    = 0x210 // u8
	offLoadflags       = 0x211 // u8
	offCode32Start     = 0x214 // u32
	offRamdiskImage    = 0x218 // u32
	offRamdiskSize     = 0x21c // u32
	offHeapEndPtr      = 0x224 // u16
	offExtLoaderVer    = 0x226 // u8
	offExtLoaderType   = 0x227 // u8
	offCmdLinePtr      = 0x228 // u32
	offInitrdAddrMax   = 0x22c // u32
	offKernelAlignment = 0x230 // u32
	offRelocatable     = 0x234 // u8
	offXloadflags      = 0x236 // u16
	offCmdlineSize     = 0x238 // u32
	offSetupData       = 0x250 // u64
	offPrefAddress     = 0x258 // u64
	offInitSize        = 0x260 // u32
	hdr212End          = 0x264 // end of init_size, the last 2.12 field read here
	hdrSpaceEnd        = 0x290 // end of the header's space in struct boot_params

	// boot_params fields outside the setup header (zero-page.rst).
	offExtRamdiskImage = 0x0c0 // u32
	offExtRamdiskSize  = 0x0c4 // u32
	offExtCmdLinePtr   = 0x0c8 // u32
	offE820Entries     = 0x1e8 // u8
	offE820Table       = 0x2d0 // struct boot_e820_entry[128]
)

// Setup-header flag values (boot.rst).
const (
	hdrMagic        = 0x53726448 // "HdrS"
	bootFlagMagic   = 0xaa55
	minVersion      = 0x020c // 2.12: xloadflags, 64-bit entry
	loadedHigh      = 0x01   // loadflags: protected-mode code at 0x100000
	canUseHeap      = 0x80   // loadflags: heap_end_ptr is valid
	xlfKernel64     = 0x01   // xloadflags: has the 64-bit entry at +0x200
	loaderUndefined = 0xff   // type_of_loader: no assigned ID
	vidModeNormal   = 0xffff // vid_mode: "normal" (no mode change)
	heapEnd         = 0xfe00 // heap_end_ptr, relative to the real-mode code
	defaultSetup    = 4      // setup_sects value meant by 0
	sectorSize      = 512
)

// ErrKernelImage is wrapped by every error LoadLinux returns about a
// malformed or unsupported kernel image; its text is "kernel".
var ErrKernelImage = errors.New("kernel")

// bzImage is what LoadLinux needs from a parsed kernel image. header is the
// setup header as the image has it (bytes 0x1f1 up to its end, at most
// hdrSpaceEnd); kernel is the protected-mode part of the file.
type bzImage struct {
	header          []byte
	kernel          []byte
	version         uint16
	initSize        uint64
	cmdlineSize     uint64
	initrdAddrMax   uint64
	kernelAlignment uint64
	relocatable     bool
	prefAddress     uint64
}

func imageErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrKernelImage}, args...)...)
}

// parseBzImage validates a bzImage's setup header and splits the file.
func parseBzImage(img []byte) (*bzImage, error) {
	n := uint64(len(img))
	if n < offHeader+4 {
		return nil, imageErr("image truncated: %d bytes, too short for a setup header", n)
	}
	le := binary.LittleEndian
	if le.Uint32(img[offHeader:]) != hdrMagic {
		return nil, imageErr("not a bzImage (no HdrS magic)")
	}
	if n < hdr212End {
		return nil, imageErr("image truncated: %d bytes, setup header needs %#x", n, hdr212End)
	}
	version := le.Uint16(img[offVersion:])
	if version < minVersion {
		return nil, imageErr("boot protocol %d.%02d too old (need 2.12 or later for the 64-bit entry)", version>>8, version&0xff)
	}
	hdrEnd := uint64(offJump) + 2 + uint64(img[offJump+1])
	if hdrEnd < hdr212End {
		return nil, imageErr("setup header ends at %#x, before the end of the protocol 2.12 fields (%#x)", hdrEnd, hdr212End)
	}
	if bf := le.Uint16(img[offBootFlag:]); bf != bootFlagMagic {
		return nil, imageErr("not a bzImage (boot flag %#04x, want 0xaa55)", bf)
	}
	if img[offLoadflags]&loadedHigh == 0 {
		return nil, imageErr("not a bzImage (zImage: loads below 1 MiB)")
	}
	if le.Uint16(img[offXloadflags:])&xlfKernel64 == 0 {
		return nil, imageErr("no 64-bit entry point (XLF_KERNEL_64 clear): 32-bit kernels are not supported")
	}
	setupSects := uint64(img[offSetupSects])
	if setupSects == 0 {
		setupSects = defaultSetup
	}
	setupSize := (setupSects + 1) * sectorSize
	if setupSize >= n {
		return nil, imageErr("image truncated: setup code needs %d bytes (setup_sects %d), image has %d", setupSize, setupSects, n)
	}
	kernel := img[setupSize:]
	if sys := uint64(le.Uint32(img[offSyssize:])) * 16; sys > uint64(len(kernel)) {
		return nil, imageErr("image truncated: protected-mode kernel has %d bytes, header says %d", len(kernel), sys)
	}
	align := uint64(le.Uint32(img[offKernelAlignment:]))
	relocatable := img[offRelocatable] != 0
	if relocatable && (align == 0 || bits.OnesCount64(align) != 1) {
		return nil, imageErr("kernel_alignment %#x is not a power of two", align)
	}
	return &bzImage{
		header:          img[offSetupSects:min(hdrEnd, hdrSpaceEnd, n)],
		kernel:          kernel,
		version:         version,
		initSize:        uint64(le.Uint32(img[offInitSize:])),
		cmdlineSize:     uint64(le.Uint32(img[offCmdlineSize:])),
		initrdAddrMax:   uint64(le.Uint32(img[offInitrdAddrMax:])),
		kernelAlignment: align,
		relocatable:     relocatable,
		prefAddress:     le.Uint64(img[offPrefAddress:]),
	}, nil
}

// memoryEnd returns the first address above everything the kernel uses
// while it decompresses when its protected-mode part is loaded at
// KernelAddr: the loaded image, and init_size bytes from where it
// decompresses itself. A relocatable kernel decompresses at KernelAddr
// rounded up to kernel_alignment but not below pref_address
// (LOAD_PHYSICAL_ADDR); any other kernel moves itself to pref_address.
func (k *bzImage) memoryEnd() uint64 {
	base := KernelAddr
	if k.relocatable {
		base = (base + k.kernelAlignment - 1) &^ (k.kernelAlignment - 1)
		base = max(base, k.prefAddress)
	} else if k.prefAddress != 0 {
		base = k.prefAddress
	}
	// pref_address is a u64 from the image: saturate instead of wrapping.
	end := base + k.initSize
	if end < base {
		end = ^uint64(0)
	}
	return max(end, KernelAddr+uint64(len(k.kernel)))
}
