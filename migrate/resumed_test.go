package migrate

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// resumedBytes builds a RESUMED payload field by field.
func resumedBytes(restore, start uint64, block ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, restore)
	b = binary.LittleEndian.AppendUint64(b, start)
	for _, x := range block {
		b = append(b, x...)
	}
	return b
}

func u16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// TestResumedTimings checks RESUMED's timings block both ways: what the
// destination writes parses back to the same values, a destination from
// before the block is still understood, and every malformed value is
// rejected.
func TestResumedTimings(t *testing.T) {
	limit := uint64(MaxReportedDuration)
	tests := []struct {
		name    string
		in      []byte
		want    resumed
		wantErr string
	}{
		{name: "version 1", in: resumed{restoreNs: 3e6, startNs: 1e6, version: 1, handleNs: 4.5e6}.append(nil),
			want: resumed{restoreNs: 3e6, startNs: 1e6, version: 1, handleNs: 4.5e6}},
		{name: "version 1 at the bounds", in: resumedBytes(limit/2, limit/2, u16(1), u16(8), u64(limit)),
			want: resumed{restoreNs: limit / 2, startNs: limit / 2, version: 1, handleNs: limit}},
		{name: "legacy, no block", in: resumedBytes(7, 9), want: resumed{restoreNs: 7, startNs: 9}},
		{name: "legacy encodes as 16 bytes", in: resumed{restoreNs: 7, startNs: 9}.append(nil), want: resumed{restoreNs: 7, startNs: 9}},
		{name: "unknown version", in: resumedBytes(1, 1, u16(2), u16(8), u64(5)), wantErr: "timings version 2 not supported"},
		{name: "version 0 with a block", in: resumedBytes(1, 1, u16(0), u16(8), u64(5)), wantErr: "timings version 0 not supported"},
		{name: "short block header", in: resumedBytes(1, 1, []byte{1}), wantErr: "truncated"},
		{name: "block header only", in: resumedBytes(1, 1, u16(1)), wantErr: "truncated"},
		{name: "length too short", in: resumedBytes(1, 1, u16(1), u16(4), u64(5)), wantErr: "length 4"},
		{name: "length past the payload", in: resumedBytes(1, 1, u16(1), u16(16), u64(5)), wantErr: "length 16"},
		{name: "trailing bytes", in: resumedBytes(1, 1, u16(1), u16(8), u64(5), []byte{0}), wantErr: "length 8 with 9 bytes left"},
		{name: "short", in: make([]byte, 15), wantErr: "truncated"},
		{name: "restore beyond the bound", in: resumedBytes(limit+1, 0), wantErr: "restore_ns"},
		{name: "start beyond the bound", in: resumedBytes(0, math.MaxUint64, u16(1), u16(8), u64(5)), wantErr: "start_ns"},
		{name: "handle beyond the bound", in: resumedBytes(0, 0, u16(1), u16(8), u64(limit+1)), wantErr: "handle_ns"},
		{name: "restore and start exceed handle", in: resumedBytes(3, 3, u16(1), u16(8), u64(5)), wantErr: "exceed handle_ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseResumed(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrProtocol) {
					t.Fatalf("parseResumed = %+v, %v; want a protocol error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseResumed = %+v, %v; want %+v", got, err, tt.want)
			}
			// The frame reader takes every valid payload.
			if _, err := newFrameReader(strings.NewReader(string(appendFrame(nil, frameResumed, 0, tt.in)))).next(); err != nil {
				t.Fatalf("frame reader: %v", err)
			}
		})
	}
}

// TestStopAndCopyBreakdown checks the arithmetic of the breakdown: the
// parts are the intervals between the source's instants (forced into
// order), the destination's timings nest in the tail, and rejected or
// impossible timings never make a part negative.
func TestStopAndCopyBreakdown(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(msec ...float64) switchTimeline {
		ts := make([]time.Time, len(msec))
		for i, m := range msec {
			ts[i] = t0.Add(time.Duration(m * float64(time.Millisecond)))
		}
		return switchTimeline{pause: ts[0], paused: ts[1], dirty: ts[2], pages: ts[3], saved: ts[4], complete: ts[5], resumed: ts[6]}
	}
	msNs := func(m float64) uint64 { return uint64(m * 1e6) }
	tests := []struct {
		name   string
		tl     switchTimeline
		res    resumed
		resErr error
		want   DowntimeBreakdown
	}{
		{
			name: "version 1",
			tl:   at(0, 1, 1.5, 4, 5, 7, 20),
			res:  resumed{restoreNs: msNs(6), startNs: msNs(2), version: 1, handleNs: msNs(9)},
			want: DowntimeBreakdown{DowntimeMs: 20, PauseMs: 1, FinalSyncMs: 3, DirtyLogMs: 0.5, FinalPagesMs: 2.5,
				StateSaveMs: 1, TransferMs: 2, DestRestoreMs: 6, DestResumeMs: 2, DestOtherMs: 1, AckRoundTripMs: 4, DestTimingsVersion: 1},
		},
		{
			name: "legacy destination",
			tl:   at(0, 1, 1.5, 4, 5, 7, 20),
			res:  resumed{restoreNs: msNs(6), startNs: msNs(2)},
			want: DowntimeBreakdown{DowntimeMs: 20, PauseMs: 1, FinalSyncMs: 3, DirtyLogMs: 0.5, FinalPagesMs: 2.5,
				StateSaveMs: 1, TransferMs: 2, DestRestoreMs: 6, DestResumeMs: 2, AckRoundTripMs: 5},
		},
		{
			name:   "timings rejected",
			tl:     at(0, 1, 1.5, 4, 5, 7, 20),
			resErr: errors.New("bad timings"),
			want: DowntimeBreakdown{DowntimeMs: 20, PauseMs: 1, FinalSyncMs: 3, DirtyLogMs: 0.5, FinalPagesMs: 2.5,
				StateSaveMs: 1, TransferMs: 2, AckRoundTripMs: 13, DestTimingsError: "bad timings"},
		},
		{
			name: "RESUMED read before the COMPLETE instant",
			tl:   at(0, 1, 1.5, 4, 5, 7, 6),
			res:  resumed{version: 1},
			want: DowntimeBreakdown{DowntimeMs: 7, PauseMs: 1, FinalSyncMs: 3, DirtyLogMs: 0.5, FinalPagesMs: 2.5,
				StateSaveMs: 1, TransferMs: 2, DestTimingsVersion: 1},
		},
		{
			name: "destination claims more than the tail",
			tl:   at(0, 1, 1.5, 4, 5, 7, 8),
			res:  resumed{restoreNs: msNs(3), version: 1, handleNs: msNs(3)},
			want: DowntimeBreakdown{DowntimeMs: 8, PauseMs: 1, FinalSyncMs: 3, DirtyLogMs: 0.5, FinalPagesMs: 2.5,
				StateSaveMs: 1, TransferMs: 2, DestRestoreMs: 3, DestTimingsVersion: 1},
		},
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newStopAndCopy(tt.tl, tt.res, tt.resErr)
			if got.Type != RecordStopAndCopy || !got.Start.Equal(t0) || got.StartUnixNs != t0.UnixNano() ||
				got.EndUnixNs != got.End.UnixNano() || got.Start.Location() != time.UTC {
				t.Fatalf("record header %+v", got)
			}
			got.Type, got.Start, got.StartUnixNs, got.End, got.EndUnixNs = "", time.Time{}, 0, time.Time{}, 0
			pairs := [][2]float64{
				{got.DowntimeMs, tt.want.DowntimeMs}, {got.PauseMs, tt.want.PauseMs}, {got.FinalSyncMs, tt.want.FinalSyncMs},
				{got.DirtyLogMs, tt.want.DirtyLogMs}, {got.FinalPagesMs, tt.want.FinalPagesMs}, {got.StateSaveMs, tt.want.StateSaveMs},
				{got.TransferMs, tt.want.TransferMs}, {got.DestRestoreMs, tt.want.DestRestoreMs}, {got.DestResumeMs, tt.want.DestResumeMs},
				{got.DestOtherMs, tt.want.DestOtherMs}, {got.AckRoundTripMs, tt.want.AckRoundTripMs},
			}
			for i, p := range pairs {
				if !near(p[0], p[1]) {
					t.Errorf("part %d: got %v, want %v (record %+v)", i, p[0], p[1], got)
				}
			}
			if got.DestTimingsVersion != tt.want.DestTimingsVersion || got.DestTimingsError != tt.want.DestTimingsError {
				t.Errorf("timings version %d error %q, want %d %q", got.DestTimingsVersion, got.DestTimingsError,
					tt.want.DestTimingsVersion, tt.want.DestTimingsError)
			}
			if tt.name != "destination claims more than the tail" && !near(got.PartsMs(), got.DowntimeMs) {
				t.Errorf("parts add up to %v, downtime %v", got.PartsMs(), got.DowntimeMs)
			}
		})
	}
}

// TestSendMalformedTimings checks that a RESUMED whose timings are
// malformed still completes the migration (the destination runs the VM;
// resuming the source would run the guest twice): the timings are
// dropped from the statistics, with the reason.
func TestSendMalformedTimings(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		wantErr string // in DestTimingsError; "" for accepted timings
		wantVer int
	}{
		{name: "version 1", payload: resumed{restoreNs: 2e6, startNs: 1e6, version: 1, handleNs: 3.5e6}.append(nil), wantVer: 1},
		{name: "legacy", payload: resumed{restoreNs: 2e6, startNs: 1e6}.append(nil)},
		{name: "unknown version", payload: resumedBytes(2e6, 1e6, u16(9), u16(8), u64(5)), wantErr: "timings version 9"},
		{name: "huge restore", payload: resumedBytes(math.MaxUint64, 0), wantErr: "restore_ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := &idleSource{mem: newTestMemory(t, destTestRAM)}
			src, dst := loopback(t)
			done := make(chan struct{})
			go func() {
				defer close(done)
				scriptedDest(dst, func(f frame) []byte {
					switch f.typ {
					case frameRoundEnd:
						e, _ := parseRoundEnd(f.payload)
						return ackFrame(e.round)
					case frameComplete:
						return appendFrame(nil, frameResumed, 0, tt.payload)
					}
					return nil
				})
				dst.Close()
			}()
			st, err := Send(context.Background(), src, vm, Options{})
			src.Close()
			<-done
			if err != nil || st.Status != StatusCompleted {
				t.Fatalf("Send: %v (status %q)", err, st.Status)
			}
			if paused, _ := vm.state(); !paused {
				t.Fatal("source resumed after RESUMED")
			}
			sc := st.StopAndCopy
			if sc == nil {
				t.Fatal("no breakdown")
			}
			if tt.wantErr == "" {
				if sc.DestTimingsError != "" || sc.DestTimingsVersion != tt.wantVer || sc.DestRestoreMs != 2 || sc.DestResumeMs != 1 ||
					st.RestoreMs != 2 || st.StartMs != 1 {
					t.Fatalf("breakdown %+v, stats restore %v start %v", sc, st.RestoreMs, st.StartMs)
				}
				if tt.wantVer == 1 && math.Abs(sc.DestOtherMs-0.5) > 1e-9 {
					t.Fatalf("dest_other_ms %v, want 0.5", sc.DestOtherMs)
				}
			} else if !strings.Contains(sc.DestTimingsError, tt.wantErr) || sc.DestRestoreMs != 0 || st.RestoreMs != 0 {
				t.Fatalf("breakdown %+v, want the timings rejected with %q", sc, tt.wantErr)
			}
		})
	}
}
