package vmm

import (
	"io"
	"sync"
)

// Console escape sequences on a raw terminal, as in QEMU: Ctrl-A x quits
// (the VM stops as if shut down through the API), Ctrl-A Ctrl-A sends one
// Ctrl-A to the guest. Every other byte goes to the guest unchanged.
const (
	escapeByte = 0x01 // Ctrl-A
	escapeQuit = 'x'
)

// escapeReader filters a terminal's input for the escape sequences.
type escapeReader struct {
	r       io.Reader
	quit    func()
	mu      sync.Mutex
	pending bool // the last byte read was an unconsumed Ctrl-A
}

// newEscapeReader returns a reader of r's bytes without the escape
// sequences; quit runs (once per Ctrl-A x) on the reading goroutine.
func newEscapeReader(r io.Reader, quit func()) *escapeReader {
	return &escapeReader{r: r, quit: quit}
}

// Read implements io.Reader.
func (e *escapeReader) Read(p []byte) (int, error) {
	for {
		n, err := e.r.Read(p)
		out := e.filter(p[:n])
		if out > 0 || err != nil {
			return out, err
		}
	}
}

// filter removes escape sequences from b in place and returns the new
// length.
func (e *escapeReader) filter(b []byte) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := 0
	for _, c := range b {
		switch {
		case e.pending:
			e.pending = false
			switch c {
			case escapeQuit, escapeQuit - 'a' + 'A':
				if e.quit != nil {
					e.quit()
				}
			case escapeByte:
				b[out] = escapeByte
				out++
			}
			// Other bytes after Ctrl-A are dropped, like unknown
			// escape commands in QEMU.
		case c == escapeByte:
			e.pending = true
		default:
			b[out] = c
			out++
		}
	}
	return out
}
