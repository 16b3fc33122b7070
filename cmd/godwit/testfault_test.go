package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"godwit/migrate"
)

func TestParseTestFault(t *testing.T) {
	tests := []struct {
		in      string
		want    *testFault
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "report", want: &testFault{}},
		{in: "die-in=round0", want: &testFault{dieIn: "round0"}},
		{in: "die-in=iterative", want: &testFault{dieIn: "iterative"}},
		{in: "die-in=stop-and-copy", want: &testFault{dieIn: "stop-and-copy"}},
		{in: "die-in=before-ack", want: &testFault{dieIn: "before-ack"}},
		{in: "die-in=", wantErr: true},
		{in: "die-in=round1", wantErr: true},
		{in: "round0", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseTestFault(tt.in)
		if tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), testFaultEnv) {
				t.Errorf("%q: error %v, want one naming %s", tt.in, err, testFaultEnv)
			}
			continue
		}
		if err != nil || (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
			t.Errorf("%q: got %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// TestFaultConnPhases feeds a stream through the fault injection in report
// mode, a few bytes per read so that headers straddle reads, and checks
// that every phase is reported once, in order.
func TestFaultConnPhases(t *testing.T) {
	var stream []byte
	frame := func(typ, flags uint16, payload []byte) {
		stream = migrate.AppendFrame(stream, typ, flags, payload)
	}
	frame(migrate.FrameHello, 0, make([]byte, 40))
	for round := range 3 {
		frame(migrate.FrameMemoryBegin, 0, []byte{byte(round), 0, 0, 0})
		frame(migrate.FramePageBatch, 0, make([]byte, 300))
		frame(migrate.FramePageBatch, 0, make([]byte, 7))
		frame(migrate.FrameDiskBatch, 0, make([]byte, 30))
		frame(migrate.FrameRoundEnd, 0, make([]byte, 28))
	}
	frame(migrate.FrameState, 1, make([]byte, 100))
	frame(migrate.FrameState, 0, make([]byte, 3))
	frame(migrate.FrameComplete, 0, nil)

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		for p := stream; len(p) > 0; p = p[min(len(p), 5):] {
			if _, err := b.Write(p[:min(len(p), 5)]); err != nil {
				return
			}
		}
		// Then take what the receiver writes.
		io.Copy(io.Discard, b)
	}()
	var logs bytes.Buffer
	f := &testFault{}
	conn := f.wrap(a, slog.New(slog.NewTextHandler(&logs, nil)))
	got := make([]byte, 0, len(stream))
	buf := make([]byte, 3)
	for len(got) < len(stream) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, stream) {
		t.Fatal("the stream changed on its way through")
	}
	resumed := migrate.AppendFrame(nil, migrate.FrameResumed, 0, make([]byte, 16))
	if _, err := conn.Write(resumed); err != nil {
		t.Fatal(err)
	}
	var phases []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if _, p, ok := strings.Cut(l, `msg="test fault: phase `); ok {
			phases = append(phases, strings.TrimSuffix(p, `"`))
		}
	}
	if want := "round0 disk-copy iterative stop-and-copy before-ack"; strings.Join(phases, " ") != want {
		t.Errorf("phases %q, want %q; log:\n%s", phases, want, logs.String())
	}
}
