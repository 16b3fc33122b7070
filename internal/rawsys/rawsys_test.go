package rawsys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// pipe returns a nonblocking pipe closed at the end of the test.
func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func TestReadWrite(t *testing.T) {
	tests := []struct {
		name    string
		write   [][]byte // written with Writev when more than one, else Write
		readLen int
		want    string
		wantErr error
	}{
		{name: "write then read", write: [][]byte{[]byte("frame")}, readLen: 16, want: "frame"},
		{name: "gathered write", write: [][]byte{[]byte("hdr:"), []byte("body"), []byte("!")}, readLen: 16, want: "hdr:body!"},
		{name: "short read", write: [][]byte{[]byte("abcdef")}, readLen: 3, want: "abc"},
		{name: "empty pipe", readLen: 4, wantErr: unix.EAGAIN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w := pipe(t)
			switch {
			case len(tt.write) == 1:
				if n, err := Write(w, tt.write[0]); err != nil || n != len(tt.write[0]) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			case len(tt.write) > 1:
				iov := make([]unix.Iovec, len(tt.write))
				total := 0
				for i, b := range tt.write {
					iov[i].Base = &b[0]
					iov[i].SetLen(len(b))
					total += len(b)
				}
				if n, err := Writev(w, iov); err != nil || n != total {
					t.Fatalf("Writev = %d, %v; want %d", n, err, total)
				}
			}
			buf := make([]byte, tt.readLen)
			n, err := Read(r, buf)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read error %v, want %v", err, tt.wantErr)
			}
			if got := string(buf[:n]); got != tt.want {
				t.Errorf("Read %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBadDescriptor(t *testing.T) {
	// Closed here, not by pipe's cleanup, which would close the numbers
	// again after another descriptor may have taken them.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := p[0], p[1]
	unix.Close(r)
	unix.Close(w)
	buf := []byte("x")
	iov := []unix.Iovec{{Base: &buf[0]}}
	iov[0].SetLen(1)
	calls := []struct {
		name string
		call func() (int, error)
	}{
		{"Read", func() (int, error) { return Read(r, buf) }},
		{"Write", func() (int, error) { return Write(w, buf) }},
		{"Writev", func() (int, error) { return Writev(w, iov) }},
		{"EpollPoll", func() (int, error) { return EpollPoll(r, make([]unix.EpollEvent, 1)) }},
	}
	for _, c := range calls {
		if n, err := c.call(); n != 0 || !errors.Is(err, unix.EBADF) {
			t.Errorf("%s on a closed descriptor = %d, %v; want 0, EBADF", c.name, n, err)
		}
	}
}

func TestEpollPoll(t *testing.T) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: 7}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 2)
	if n, err := EpollPoll(ep, events); n != 0 || err != nil {
		t.Fatalf("EpollPoll of an idle set = %d, %v; want 0, nil without waiting", n, err)
	}
	one := binary.NativeEndian.AppendUint64(nil, 1)
	if _, err := Write(efd, one); err != nil {
		t.Fatal(err)
	}
	n, err := EpollPoll(ep, events)
	if n != 1 || err != nil || events[0].Fd != 7 {
		t.Fatalf("EpollPoll after a signal = %d, %v, %+v; want the eventfd's event", n, err, events[:n])
	}
	var got [8]byte
	if _, err := Read(efd, got[:]); err != nil || !bytes.Equal(got[:], one) {
		t.Errorf("eventfd read %x, %v; want %x", got, err, one)
	}
}
