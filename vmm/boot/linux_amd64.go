package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"godwit/vmm/kvm"
	"godwit/vmm/memory"
)

// LoadLinux loads a Linux bzImage for the 64-bit boot protocol
// (Documentation/arch/x86/boot.rst, protocol 2.12 or later with
// XLF_KERNEL_64), the optional initrd (nil or empty: none) and the command
// line into mem, and returns the entry state: LongMode at the 64-bit entry
// point KernelAddr+0x200 with RSI = ZeroPageAddr, RSP = StackTop (a scratch
// stack the kernel replaces at once) and interrupts off.
//
// It writes, at the addresses of the package's memory map:
//   - the protected-mode kernel at KernelAddr;
//   - the initrd page-aligned as high as possible below
//     min(initrd_addr_max+1, end of RAM below the MMIO hole), above the
//     memory the kernel needs to decompress itself;
//   - the command line at CmdlineAddr;
//   - the zero page at ZeroPageAddr: the image's setup header, patched
//     (type_of_loader, loadflags CAN_USE_HEAP, heap_end_ptr, cmd_line_ptr,
//     ramdisk_image/size, code32_start, vid_mode "normal"), and the e820
//     map of E820Map;
//   - the GDT and identity map of WriteLongModeSetup.
//
// It does not write the MP table: call WriteMPTable as well, which fills
// the MP area the e820 map reports reserved.
func LoadLinux(mem *memory.Memory, kernel, initrd []byte, cmdline string) (Entry, error) {
	k, err := parseBzImage(kernel)
	if err != nil {
		return Entry{}, err
	}
	if uint64(len(cmdline)) > k.cmdlineSize {
		return Entry{}, fmt.Errorf("kernel command line is %d bytes, the kernel accepts at most %d (cmdline_size)", len(cmdline), k.cmdlineSize)
	}
	if uint64(len(cmdline)) >= CmdlineMax {
		return Entry{}, fmt.Errorf("kernel command line is %d bytes, godwit passes at most %d", len(cmdline), CmdlineMax-1)
	}
	if bytes.IndexByte([]byte(cmdline), 0) >= 0 {
		return Entry{}, fmt.Errorf("kernel command line contains a NUL byte")
	}

	regions := mem.Regions()
	lowEnd := regions[0].End()
	kernelEnd := k.memoryEnd()
	if kernelEnd > lowEnd {
		return Entry{}, fmt.Errorf("memory too small for the kernel: need at least %d MiB of RAM (kernel decompresses up to %#x), have %d MiB below the MMIO hole",
			ceilMiB(kernelEnd), kernelEnd, lowEnd/mib)
	}
	var initrdAddr uint64
	if len(initrd) > 0 {
		initrdAddr, err = placeInitrd(k, kernelEnd, lowEnd, uint64(len(initrd)))
		if err != nil {
			return Entry{}, err
		}
	}

	if err := mem.Write(KernelAddr, k.kernel); err != nil {
		return Entry{}, fmt.Errorf("writing kernel: %w", err)
	}
	if len(initrd) > 0 {
		if err := mem.Write(initrdAddr, initrd); err != nil {
			return Entry{}, fmt.Errorf("writing initrd: %w", err)
		}
	}
	cl := make([]byte, CmdlineMax)
	copy(cl, cmdline)
	if err := mem.Write(CmdlineAddr, cl); err != nil {
		return Entry{}, fmt.Errorf("writing command line: %w", err)
	}
	zp, err := zeroPage(k, regions, initrdAddr, uint64(len(initrd)))
	if err != nil {
		return Entry{}, err
	}
	if err := mem.Write(ZeroPageAddr, zp); err != nil {
		return Entry{}, fmt.Errorf("writing zero page: %w", err)
	}
	if err := WriteLongModeSetup(mem); err != nil {
		return Entry{}, err
	}
	return Entry{Mode: LongMode, Regs: kvm.Regs{
		RIP:    KernelAddr + Kernel64EntryOffset,
		RSI:    ZeroPageAddr,
		RSP:    StackTop,
		RFLAGS: rflagsReserved,
	}}, nil
}

// placeInitrd returns the page-aligned address of an initrd of size bytes,
// as high as possible below min(initrd_addr_max+1, lowEnd) and not below
// kernelEnd.
func placeInitrd(k *bzImage, kernelEnd, lowEnd, size uint64) (uint64, error) {
	limit := min(k.initrdAddrMax+1, lowEnd)
	if size > limit || (limit-size)&^(pageSize-1) < kernelEnd {
		if limit < lowEnd {
			return 0, fmt.Errorf("initrd of %d bytes does not fit between the kernel (up to %#x) and initrd_addr_max %#x", size, kernelEnd, k.initrdAddrMax)
		}
		need := (kernelEnd+pageSize-1)&^(pageSize-1) + size
		return 0, fmt.Errorf("memory too small for the kernel and initrd: need at least %d MiB of RAM, have %d MiB below the MMIO hole", ceilMiB(need), lowEnd/mib)
	}
	return (limit - size) &^ (pageSize - 1), nil
}

// zeroPage builds struct boot_params (zero-page.rst): all zero but for the
// image's setup header, the patched loader fields and the e820 map.
func zeroPage(k *bzImage, regions []memory.Region, initrdAddr, initrdSize uint64) ([]byte, error) {
	zp := make([]byte, ZeroPageSize)
	copy(zp[offSetupSects:], k.header)
	le := binary.LittleEndian
	le.PutUint16(zp[offVidMode:], vidModeNormal)
	zp[offTypeOfLoader] = loaderUndefined
	zp[offLoadflags] |= canUseHeap
	le.PutUint32(zp[offCode32Start:], uint32(KernelAddr))
	le.PutUint32(zp[offRamdiskImage:], uint32(initrdAddr))
	le.PutUint32(zp[offRamdiskSize:], uint32(initrdSize))
	le.PutUint32(zp[offExtRamdiskImage:], uint32(initrdAddr>>32))
	le.PutUint32(zp[offExtRamdiskSize:], uint32(initrdSize>>32))
	le.PutUint16(zp[offHeapEndPtr:], heapEnd)
	zp[offExtLoaderVer] = 0
	zp[offExtLoaderType] = 0
	le.PutUint32(zp[offCmdLinePtr:], uint32(CmdlineAddr))
	le.PutUint32(zp[offExtCmdLinePtr:], uint32(CmdlineAddr>>32))
	le.PutUint64(zp[offSetupData:], 0)

	e820 := E820Map(regions)
	if len(e820) > maxE820Entries {
		return nil, fmt.Errorf("e820 map has %d entries, the zero page holds %d", len(e820), maxE820Entries)
	}
	zp[offE820Entries] = byte(len(e820))
	table := zp[offE820Table:offE820Table]
	for _, e := range e820 {
		table = e.encode(table)
	}
	return zp, nil
}

// ceilMiB returns n bytes in MiB, rounded up.
func ceilMiB(n uint64) uint64 { return (n + mib - 1) / mib }
