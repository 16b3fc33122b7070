package migrate

import (
	"bytes"
	"context"
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
)

// boundedTarget is a testTarget that declares a bound on its state.
type boundedTarget struct {
	*testTarget
	maxState int
}

func (b boundedTarget) MaxStateBytes() int { return b.maxState }

// frameHeader returns a bare frame header announcing n payload bytes.
func frameHeader(typ frameType, n uint32) []byte {
	b := binary.LittleEndian.AppendUint16(nil, uint16(typ))
	b = binary.LittleEndian.AppendUint16(b, 0)
	return binary.LittleEndian.AppendUint32(b, n)
}

// TestReceiveBoundsFramesByConfig: the receiver refuses a frame longer
// than the VM it accepted allows from the frame's header alone, without
// reading or allocating its payload; a frame within the bound is taken.
func TestReceiveBoundsFramesByConfig(t *testing.T) {
	src := sourceRAM(t) // 2 MiB: 512 pages, so a batch is at most ~2 MiB
	smallBatch := batchHeader + 2*512/8 + 512*(pageHeader+pageSize)
	tests := []struct {
		name     string
		build    func(s *stream)
		maxState int // the target's StateBounder bound; 0: none
		wantErr  string
		maxAlloc uint64
	}{
		{name: "a large frame before HELLO", build: func(s *stream) { s.Write(frameHeader(frameState, maxStateChunk)) },
			wantErr: "unexpected STATE frame of 1048576 bytes in state WaitHello", maxAlloc: 512 << 10},
		{name: "a page batch larger than this VM's", build: func(s *stream) {
			s.hello(src, "ok").begin(0).Write(frameHeader(framePageBatch, uint32(smallBatch)+1))
		}, wantErr: "a batch of this VM's pages is at most", maxAlloc: 1 << 20},
		{name: "a disk batch in a migration without storage", build: func(s *stream) {
			s.hello(src, "ok").begin(0).Write(frameHeader(frameDiskBatch, frameSpecs[frameDiskBatch].maxLen))
		}, wantErr: "DISK_BATCH frame in a migration without storage", maxAlloc: 1 << 20},
		{name: "state beyond the target's bound", maxState: 4096, build: func(s *stream) {
			s.hello(src, "ok").begin(0)
			s.end(0, s.allPages(src, CompressionNone))
			s.Write(frameHeader(frameState, 4097))
		}, wantErr: "VM state exceeds 4096 bytes", maxAlloc: 6 << 20},
		{name: "state chunks adding up beyond the bound", maxState: 4096, build: func(s *stream) {
			s.hello(src, "ok").begin(0)
			s.end(0, s.allPages(src, CompressionNone))
			s.frame(frameState, flagMore, make([]byte, 3000))
			s.Write(frameHeader(frameState, 2000))
		}, wantErr: "VM state exceeds 4096 bytes", maxAlloc: 6 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s stream
			tt.build(&s)
			in := s.Bytes()
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
			factory := factoryFor(tgt)
			if tt.maxState > 0 {
				factory = func(cfg []byte) (Target, error) { return boundedTarget{tgt, tt.maxState}, nil }
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := Receive(context.Background(), &scriptConn{r: bytes.NewReader(in)}, factory, ReceiveOptions{Workers: 1})
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Receive = %v, want an error containing %q", err, tt.wantErr)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > tt.maxAlloc {
				t.Fatalf("allocated %d bytes, bound %d", got, tt.maxAlloc)
			}
			if !tgt.discarded && tt.name != "a large frame before HELLO" {
				t.Fatal("the target was not discarded")
			}
		})
	}

	t.Run("within the bounds", func(t *testing.T) {
		var s stream
		s.hello(src, "ok").begin(0)
		s.end(0, s.allPages(src, CompressionNone))
		state, _ := encodeState(testSections)
		s.state(testSections).frame(frameComplete, 0, nil)
		tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
		factory := func(cfg []byte) (Target, error) { return boundedTarget{tgt, len(state)}, nil }
		if _, _, err := Receive(context.Background(), &scriptConn{r: bytes.NewReader(s.Bytes())}, factory, ReceiveOptions{}); err != nil {
			t.Fatalf("a state of exactly the bound: %v", err)
		}
	})
}
