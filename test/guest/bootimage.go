package guest

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

// BootImage is the test guest as a bootable disk image, built from boot.S
// by build.sh: an 8 KiB image that a PC BIOS (QEMU's SeaBIOS) boots from a
// raw disk and `godwit run --boot-sector` boots directly. It switches to
// long mode, copies Binary (byte for byte the same program) to LoadAddr and
// its parameter block to ParamAddr, measures the TSC frequency against the
// PIT when a dirty-rate limit is set, and enters the test guest as the
// flat-guest loader does. Its parameter block is set with PatchBootImage.
//
//go:embed boot.bin
var BootImage []byte

// Boot image layout (see the header comment of boot.S).
const (
	// BootImageMagic is at BootImageMagicOffset in every boot image.
	BootImageMagic = "GDWTBOOT"
	// BootImageMagicOffset is the offset of BootImageMagic.
	BootImageMagicOffset = 0x08
	// BootImageVersion is the header version this package understands.
	BootImageVersion = 1
	// BootImageEndMagic ends the image: the first sector checks for it to
	// know whether the rest of the image is in memory.
	BootImageEndMagic = "GDWTEND!"

	bootOffVersion     = 0x10 // u32 header version
	bootOffSize        = 0x14 // u32 image size
	bootOffParams      = 0x18 // u32 offset of the parameter block
	bootOffPayload     = 0x1c // u32 offset of the included test guest
	bootOffPayloadSize = 0x20 // u32 size of the included test guest
	bootHeaderEnd      = 0x24
)

// BootLayout is what a boot image's header says about it.
type BootLayout struct {
	// Size is the image size in bytes, a multiple of 512.
	Size int
	// ParamsOffset is the offset of the parameter block.
	ParamsOffset int
	// PayloadOffset and PayloadSize locate the included test guest.
	PayloadOffset, PayloadSize int
}

// ParseBootImage checks img's header (magic, version, sizes and offsets,
// the boot signature and the end marker) and returns its layout.
func ParseBootImage(img []byte) (BootLayout, error) {
	if len(img) < 512 || len(img) < bootHeaderEnd {
		return BootLayout{}, fmt.Errorf("guest: boot image is %d bytes, too short", len(img))
	}
	if string(img[BootImageMagicOffset:BootImageMagicOffset+8]) != BootImageMagic {
		return BootLayout{}, fmt.Errorf("guest: not a boot image: no %q at offset %#x", BootImageMagic, BootImageMagicOffset)
	}
	le := binary.LittleEndian
	if v := le.Uint32(img[bootOffVersion:]); v != BootImageVersion {
		return BootLayout{}, fmt.Errorf("guest: boot image header version %d, want %d", v, BootImageVersion)
	}
	l := BootLayout{
		Size:          int(le.Uint32(img[bootOffSize:])),
		ParamsOffset:  int(le.Uint32(img[bootOffParams:])),
		PayloadOffset: int(le.Uint32(img[bootOffPayload:])),
		PayloadSize:   int(le.Uint32(img[bootOffPayloadSize:])),
	}
	switch {
	case l.Size != len(img) || l.Size%512 != 0 || l.Size > MaxImageSize:
		return BootLayout{}, fmt.Errorf("guest: boot image header says %d bytes, the image has %d (want a multiple of 512, at most %d)", l.Size, len(img), MaxImageSize)
	case l.ParamsOffset < bootHeaderEnd || l.ParamsOffset+ParamSize > 510:
		return BootLayout{}, fmt.Errorf("guest: boot image parameter block at %#x is outside the first sector's data", l.ParamsOffset)
	case l.PayloadOffset < 512 || l.PayloadSize <= 0 || l.PayloadOffset+l.PayloadSize > l.Size-len(BootImageEndMagic):
		return BootLayout{}, fmt.Errorf("guest: boot image payload %#x+%#x lies outside the image", l.PayloadOffset, l.PayloadSize)
	case img[510] != 0x55 || img[511] != 0xaa:
		return BootLayout{}, fmt.Errorf("guest: boot image has no 0x55 0xaa boot signature")
	case string(img[l.Size-len(BootImageEndMagic):]) != BootImageEndMagic:
		return BootLayout{}, fmt.Errorf("guest: boot image does not end with %q", BootImageEndMagic)
	}
	if err := checkHeader(img[l.ParamsOffset : l.ParamsOffset+ParamSize]); err != nil {
		return BootLayout{}, fmt.Errorf("guest: boot image parameter block: %w", err)
	}
	return l, nil
}

// PatchBootImage returns a copy of img (normally BootImage) whose parameter
// block holds p, for a VM of ramSize bytes of RAM below the 32-bit PCI
// hole. p is validated as Params.Validate does, except that TSCKHz must be
// zero: the image measures the TSC frequency itself.
func PatchBootImage(img []byte, p Params, ramSize uint64) ([]byte, error) {
	l, err := ParseBootImage(img)
	if err != nil {
		return nil, err
	}
	if p.TSCKHz != 0 {
		return nil, fmt.Errorf("guest: a boot image measures the TSC frequency itself; TSCKHz must be 0, not %d", p.TSCKHz)
	}
	check := p
	check.TSCKHz = 1 // stands for the frequency the image will measure
	if err := check.Validate(ramSize); err != nil {
		return nil, err
	}
	out := append([]byte(nil), img...)
	copy(out[l.ParamsOffset:], p.Encode())
	return out, nil
}

// BootImageParams returns the parameters patched into a boot image.
func BootImageParams(img []byte) (Params, error) {
	l, err := ParseBootImage(img)
	if err != nil {
		return Params{}, err
	}
	return DecodeParams(img[l.ParamsOffset : l.ParamsOffset+ParamSize])
}
