package vmm

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// console is where COM1's output goes and where its input comes from.
type console struct {
	w       io.Writer
	in      io.Reader
	file    *os.File      // output file to close, for Mode "file"
	restore *unix.Termios // terminal state to restore, when stdin was made raw
	ttyFD   int
}

// openConsole opens the serial backend. With stdio and a terminal on stdin,
// the terminal is switched to raw mode so the user can type into the guest;
// Close restores it.
func openConsole(cfg SerialConfig) (*console, error) {
	switch {
	case cfg.Out != nil:
		return &console{w: cfg.Out}, nil
	case cfg.Mode == "none":
		return &console{w: io.Discard}, nil
	case cfg.Mode == "file":
		f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("serial output: %w", err)
		}
		return &console{w: f, file: f}, nil
	}
	c := &console{w: os.Stdout, in: os.Stdin, ttyFD: int(os.Stdin.Fd())}
	if t, err := unix.IoctlGetTermios(c.ttyFD, unix.TCGETS); err == nil {
		saved := *t
		raw := *t
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN] = 1
		raw.Cc[unix.VTIME] = 0
		if err := unix.IoctlSetTermios(c.ttyFD, unix.TCSETS, &raw); err == nil {
			c.restore = &saved
		}
	}
	return c, nil
}

// Close restores the terminal and closes an output file.
func (c *console) Close() error {
	if c.restore != nil {
		_ = unix.IoctlSetTermios(c.ttyFD, unix.TCSETS, c.restore)
		c.restore = nil
	}
	if c.file != nil {
		err := c.file.Close()
		c.file = nil
		return err
	}
	return nil
}
