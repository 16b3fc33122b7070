package boot

import (
	"fmt"

	"godwit/vmm/kvm"
	"godwit/vmm/memory"
)

// FlatMinStack is the stack space LoadFlat64 keeps clear below stackTop:
// [stackTop-FlatMinStack, stackTop) must not overlap the image or the
// long-mode structures.
const FlatMinStack uint64 = 16 << 10

// LoadFlat64 loads a flat 64-bit image at loadAddr, writes the long-mode GDT
// and identity map (WriteLongModeSetup), and returns the entry state:
// LongMode at RIP = loadAddr with RSP = stackTop, RSI = rsi, every other
// general register zero and interrupts off (RFLAGS = 2). godwit's test guest
// passes LoadAddr 0x100000, StackTop 0x80000 and its parameter block at
// ParamBlockAddr as rsi (constants of package test/guest).
//
// The image must be non-empty, lie in RAM below the MMIO hole and overlap
// none of the ranges the loaders reserve (GDT, page tables, zero page,
// command line, parameter block, MP area); stackTop must be 16-byte aligned,
// in low RAM, with FlatMinStack bytes below it clear of the image and those
// ranges.
func LoadFlat64(mem *memory.Memory, image []byte, loadAddr, stackTop, rsi uint64) (Entry, error) {
	if len(image) == 0 {
		return Entry{}, fmt.Errorf("flat image is empty")
	}
	lowEnd := mem.Regions()[0].End()
	size := uint64(len(image))
	if loadAddr >= lowEnd || size > lowEnd-loadAddr {
		return Entry{}, fmt.Errorf("flat image of %d bytes at %#x does not fit in the %d MiB of RAM below the MMIO hole", size, loadAddr, lowEnd/mib)
	}
	img := Range{"flat image", loadAddr, loadAddr + size}
	if stackTop%16 != 0 || stackTop < FlatMinStack || stackTop > lowEnd {
		return Entry{}, fmt.Errorf("stack top %#x must be 16-byte aligned and in [%#x, %#x]", stackTop, FlatMinStack, lowEnd)
	}
	stack := Range{"stack", stackTop - FlatMinStack, stackTop}
	if stack.Overlaps(img) {
		return Entry{}, fmt.Errorf("stack [%#x, %#x) overlaps the flat image [%#x, %#x)", stack.Start, stack.End, img.Start, img.End)
	}
	for _, r := range longModeRanges() {
		for _, x := range []Range{img, stack} {
			if x.Overlaps(r) {
				return Entry{}, fmt.Errorf("%s [%#x, %#x) overlaps the %s [%#x, %#x)", x.Name, x.Start, x.End, r.Name, r.Start, r.End)
			}
		}
	}
	if err := mem.Write(loadAddr, image); err != nil {
		return Entry{}, fmt.Errorf("writing flat image: %w", err)
	}
	if err := WriteLongModeSetup(mem); err != nil {
		return Entry{}, err
	}
	return Entry{Mode: LongMode, Regs: kvm.Regs{
		RIP:    loadAddr,
		RSP:    stackTop,
		RSI:    rsi,
		RFLAGS: rflagsReserved,
	}}, nil
}
