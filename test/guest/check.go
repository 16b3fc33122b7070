package guest

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// CheckResult summarises a memory image that passed Check.
type CheckResult struct {
	// Counter is the counter of the first page of the range.
	Counter uint64
	// Boundary is the index of the first page holding Counter-1 (the pass in
	// progress has reached it but not dirtied it yet), or -1 if every page
	// holds Counter.
	Boundary int64
	// Pages is the number of pages in the range.
	Pages uint64
}

// CheckError describes the first page of the range that breaks the pattern.
type CheckError struct {
	// Index is the page's index within the range.
	Index uint64
	// GPA is the page's guest-physical address.
	GPA uint64
	// Found is the counter the page holds.
	Found uint64
	// Expected lists the counters that would have been valid there.
	Expected []uint64
}

// Error describes the bad page.
func (e *CheckError) Error() string {
	want := make([]string, len(e.Expected))
	for i, v := range e.Expected {
		want[i] = fmt.Sprint(v)
	}
	return fmt.Sprintf("guest: page %d at GPA %#x holds counter %d, expected %s",
		e.Index, e.GPA, e.Found, strings.Join(want, " or "))
}

// Check verifies the test guest's pattern in image, which holds guest RAM
// from GPA 0 up to at least p.RangeEnd. Every page in the range must hold
// the same counter c (the little-endian u64 at its first byte), except that
// a prefix may hold c+1 (the pass in progress): counters are non-increasing
// along the range, differ by at most one and change at most once. Before
// the first pass completes this reads 1,...,1,0,...,0 since RAM starts
// zeroed.
//
// On failure it returns a *CheckError for the first bad page, or a plain
// error if the range is invalid or the image too short; the CheckResult is
// then the zero value.
func Check(image []byte, p Params) (CheckResult, error) {
	if err := p.checkRange(); err != nil {
		return CheckResult{}, err
	}
	if uint64(len(image)) < p.RangeEnd {
		return CheckResult{}, fmt.Errorf("guest: memory image is %#x bytes, shorter than the range end %#x", len(image), p.RangeEnd)
	}
	pages := p.Pages()
	// The range is within image, hence within int.
	mem := image[p.RangeStart:p.RangeEnd]
	le := binary.LittleEndian
	first := le.Uint64(mem)
	res := CheckResult{Counter: first, Boundary: -1, Pages: pages}

	// Before the boundary pages hold first (or first-1, which starts the
	// boundary); after it they hold exactly first-1.
	cur := first
	for i := uint64(1); i < pages; i++ {
		v := le.Uint64(mem[i*PageSize:])
		if v == cur {
			continue
		}
		if res.Boundary < 0 && first > 0 && v == first-1 {
			res.Boundary = int64(i)
			cur = v
			continue
		}
		e := &CheckError{Index: i, GPA: p.RangeStart + i*PageSize, Found: v}
		switch {
		case res.Boundary >= 0:
			e.Expected = []uint64{cur}
		case first == 0:
			e.Expected = []uint64{0}
		default:
			e.Expected = []uint64{first, first - 1}
		}
		return CheckResult{}, e
	}
	return res, nil
}

// MatchPasses reports whether passes, the completed-pass count read from
// the status area of the same paused image, agrees with r. With a boundary
// the pass in progress is number Counter, so passes must be Counter-1.
// Without one the guest may have stopped before or after recording the
// pass that dirtied the last page, so passes may be Counter or Counter-1.
func (r CheckResult) MatchPasses(passes uint64) error {
	ok := passes == r.Counter-1 && r.Counter > 0
	if r.Boundary < 0 {
		ok = ok || passes == r.Counter
	}
	if !ok {
		return fmt.Errorf("guest: status records %d completed passes but the pages hold counter %d (boundary %d)",
			passes, r.Counter, r.Boundary)
	}
	return nil
}
