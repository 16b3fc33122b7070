package boot

import (
	"fmt"

	"godwit/vmm/kvm"
	"godwit/vmm/memory"
)

// BootDrive is the BIOS drive number a boot sector finds in DL: the first
// hard disk.
const BootDrive = 0x80

// LoadBootSector loads a raw boot sector or flat real-mode image of 1 byte
// to BootSectorMaxSize (64 KiB) at BootSectorAddr (0x7c00) and returns the
// entry state a BIOS leaves: RealMode at CS:IP = 0:0x7c00, DL = BootDrive,
// SS:SP = 0:0x7c00 (the stack grows down below the image), interrupts off.
//
// The 0x55AA signature of a 512-byte boot sector is not required: godwit
// runs what it is given, so flat images of any length up to 64 KiB work the
// same way. There is no BIOS: the IVT is zero and no BIOS services exist.
func LoadBootSector(mem *memory.Memory, image []byte) (Entry, error) {
	if len(image) == 0 {
		return Entry{}, fmt.Errorf("boot sector image is empty")
	}
	if uint64(len(image)) > BootSectorMaxSize {
		return Entry{}, fmt.Errorf("boot sector image is %d bytes, at most %d (64 KiB) are supported", len(image), BootSectorMaxSize)
	}
	if err := mem.Write(BootSectorAddr, image); err != nil {
		return Entry{}, fmt.Errorf("writing boot sector: %w", err)
	}
	return Entry{Mode: RealMode, Regs: kvm.Regs{
		RIP:    BootSectorAddr,
		RDX:    BootDrive,
		RSP:    BootSectorAddr,
		RFLAGS: rflagsReserved,
	}}, nil
}
