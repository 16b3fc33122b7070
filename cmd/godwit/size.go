package main

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// sizeUnits are the binary multipliers parseSize accepts as a suffix.
var sizeUnits = map[byte]uint64{
	'K': 1 << 10,
	'M': 1 << 20,
	'G': 1 << 30,
	'T': 1 << 40,
}

// parseSize parses a byte count: decimal digits with an optional binary
// suffix K, M, G or T (either case; "256M" is 256 MiB), or a hexadecimal
// number with a 0x prefix and no suffix ("0x100000", handy for addresses).
// Signs, spaces, fractions and values that overflow 64 bits are rejected.
func parseSize(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty size")
	}
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		n, err := strconv.ParseUint(s[2:], 16, 64)
		if err != nil {
			return 0, sizeError(s, err)
		}
		return n, nil
	}
	digits, mult := s, uint64(1)
	if m, ok := sizeUnits[strings.ToUpper(s[len(s)-1:])[0]]; ok {
		digits, mult = s[:len(s)-1], m
	} else if c := s[len(s)-1]; c < '0' || c > '9' {
		return 0, fmt.Errorf("size %q: unknown suffix %q (want K, M, G or T)", s, c)
	}
	if digits == "" {
		return 0, fmt.Errorf("size %q: no number before the suffix", s)
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, sizeError(s, err)
	}
	hi, lo := bits.Mul64(n, mult)
	if hi != 0 {
		return 0, fmt.Errorf("size %q overflows 64 bits", s)
	}
	return lo, nil
}

// sizeError explains a strconv failure for size s.
func sizeError(s string, err error) error {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("size %q overflows 64 bits", s)
	}
	return fmt.Errorf("size %q is not a number (want e.g. 4096, 256M, 1G or 0x1000)", s)
}

// formatSize renders n bytes with the largest binary unit that keeps it
// readable: "256 MiB", "1.5 GiB", "4 KiB", "512 B".
func formatSize(n uint64) string {
	units := []struct {
		name string
		size uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		switch {
		case n < u.size:
			continue
		case n%u.size == 0:
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		default:
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}
