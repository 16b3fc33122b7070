package harness

import (
	"fmt"
	"strconv"
)

// CPIOEntry is one member of a newc archive read by ReadCPIO.
type CPIOEntry struct {
	Name string
	Mode uint32 // type and permission bits, as in st_mode
	Data string // file content or symlink target
}

// ReadCPIO parses a concatenation of newc archives (as the kernel sees an
// initramfs), skipping the zero padding between them and the trailers. It
// exists to check what CPIOWriter wrote.
func ReadCPIO(b []byte) ([]CPIOEntry, error) {
	var out []CPIOEntry
	align := func(n int) int { return (n + 3) &^ 3 }
	off := 0
	for off < len(b) {
		if b[off] == 0 {
			off++
			continue
		}
		if off%4 != 0 {
			return nil, fmt.Errorf("cpio: header at unaligned offset %d", off)
		}
		if off+headerLen > len(b) || string(b[off:off+6]) != newcMagic {
			return nil, fmt.Errorf("cpio: offset %d: no newc header", off)
		}
		var fields [13]int
		for i := range fields {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("cpio: offset %d field %d: %v", off, i, err)
			}
			fields[i] = int(v)
		}
		mode, size, namesize := fields[1], fields[6], fields[11]
		nameStart := off + headerLen
		dataStart := align(nameStart + namesize)
		if namesize < 1 || dataStart+size > len(b) || dataStart+size < dataStart {
			return nil, fmt.Errorf("cpio: offset %d: entry overruns the archive", off)
		}
		if b[nameStart+namesize-1] != 0 {
			return nil, fmt.Errorf("cpio: offset %d: name not NUL-terminated", off)
		}
		name := string(b[nameStart : nameStart+namesize-1])
		data := string(b[dataStart : dataStart+size])
		off = align(dataStart + size)
		if name != newcTrailer {
			out = append(out, CPIOEntry{name, uint32(mode), data})
		}
	}
	return out, nil
}
