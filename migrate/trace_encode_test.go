package migrate_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"godwit/migrate"
)

// TestEncodeRecord pins the JSON of each trace record: field names and
// units as docs/trace.md documents them, the type set by the encoder
// whatever the caller left in it, one line ending in a newline, no HTML
// escaping, and refusals for what is not a record or not finite.
func TestEncodeRecord(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	t1 := t0.Add(1500 * time.Microsecond)
	full := migrate.RoundRecord{
		Type: "bogus", Round: 2, Start: t0, StartUnixNs: t0.UnixNano(), End: t1, EndUnixNs: t1.UnixNano(), DurationMs: 1.5,
		PagesSent: 10, Pages: migrate.PageStats{Normal: 1, Zero: 7, Compressed: 2}, Bytes: 9000, BandwidthBytesPerSec: 6e6,
		DirtyPagesFound: 4, DirtyPagesPerSec: 2000, DirtyBytesPerSec: 2000 * 4096, ThrottlePct: 20,
		ExpectedDowntimeMs: 5.25, Decision: migrate.DecisionThrottleUp, ThrottleToPct: 60, Reason: "a <reason> & more",
	}
	paused := migrate.RoundRecord{Round: 3, Paused: true, Start: t1, StartUnixNs: t1.UnixNano(), End: t1, EndUnixNs: t1.UnixNano(), Bytes: 40}
	breakdown := migrate.DowntimeBreakdown{
		Type: migrate.RecordStopAndCopy, Round: 3, Start: t0, StartUnixNs: t0.UnixNano(), End: t1, EndUnixNs: t1.UnixNano(), DowntimeMs: 1.5, ExpectedDowntimeMs: 5.25,
		PauseMs: 0.1, FinalSyncMs: 0.3, DirtyLogMs: 0.1, FinalPagesMs: 0.2, FinalPages: migrate.PageStats{Zero: 1}, FinalBytes: 40,
		StateSaveMs: 0.2, StateBytes: 300, TransferMs: 0.1, TransferBytes: 312, DestRestoreMs: 0.4, DestResumeMs: 0.2,
		DestOtherMs: 0.05, AckRoundTripMs: 0.15, DestTimingsVersion: 1,
	}
	stats := migrate.Stats{Status: migrate.StatusCompleted, DowntimeMs: 1.5, Rounds: 4, StopAndCopy: &breakdown}
	const stamps = `"start":"2025-03-01T12:00:00.123456789Z","start_unix_ns":1740830400123456789,` +
		`"end":"2025-03-01T12:00:00.124956789Z","end_unix_ns":1740830400124956789,`
	const breakdownFields = `"round":3,` + stamps + `"downtime_ms":1.5,"expected_downtime_ms":5.25,` +
		`"pause_ms":0.1,"final_sync_ms":0.3,"dirty_log_ms":0.1,"final_pages_ms":0.2,` +
		`"final_pages":{"normal":0,"zero":1,"compressed":0,"deduplicated":0},"final_bytes":40,"state_save_ms":0.2,"state_bytes":300,` +
		`"transfer_ms":0.1,"transfer_bytes":312,"dest_restore_ms":0.4,"dest_resume_ms":0.2,"dest_other_ms":0.05,` +
		`"ack_round_trip_ms":0.15,"dest_timings_version":1`
	tests := []struct {
		name    string
		rec     any
		want    string
		wantErr string
	}{
		{name: "round", rec: full, want: `{"type":"round","round":2,"paused":false,` + stamps +
			`"duration_ms":1.5,"pages_sent":10,"pages":{"normal":1,"zero":7,"compressed":2,"deduplicated":0},"bytes":9000,` +
			`"bandwidth_bytes_per_sec":6000000,"dirty_pages_found":4,"dirty_pages_per_sec":2000,"dirty_bytes_per_sec":8192000,` +
			`"throttle_pct":20,"expected_downtime_ms":5.25,"decision":"throttle-up","throttle_to_pct":60,"reason":"a <reason> & more"}`},
		{name: "paused round omits the decision", rec: paused, want: `{"type":"round","round":3,"paused":true,` +
			`"start":"2025-03-01T12:00:00.124956789Z","start_unix_ns":1740830400124956789,` +
			`"end":"2025-03-01T12:00:00.124956789Z","end_unix_ns":1740830400124956789,"duration_ms":0,"pages_sent":0,` +
			`"pages":{"normal":0,"zero":0,"compressed":0,"deduplicated":0},"bytes":40,"bandwidth_bytes_per_sec":0,"dirty_pages_found":0,` +
			`"dirty_pages_per_sec":0,"dirty_bytes_per_sec":0,"throttle_pct":0}`},
		{name: "stop_and_copy", rec: breakdown, want: `{"type":"stop_and_copy",` + breakdownFields + `}`},
		{name: "stop_and_copy with rejected timings", rec: migrate.DowntimeBreakdown{DestTimingsError: "bad"},
			want: `"dest_timings_version":0,"dest_timings_error":"bad"}`},
		{name: "summary flattens the statistics", rec: migrate.SummaryRecord{Stats: stats}, want: `{"type":"summary","status":"completed",` +
			`"setup_ms":0,"total_ms":0,"downtime_ms":1.5,"expected_downtime_ms":0,"rounds":4,"transferred_bytes":0,` +
			`"pages":{"normal":0,"zero":0,"compressed":0,"deduplicated":0},"mbps":0,"dirty_pages_rate":0,"throttle_pct":0,"final_sync_ms":0,` +
			`"final_round_ms":0,"final_apply_ms":0,"switchover_ms":0,"state_save_ms":0,"restore_ms":0,"start_ms":0,` +
			`"stop_and_copy":{"type":"stop_and_copy",` + breakdownFields + `}}`},
		{name: "failed summary", rec: migrate.SummaryRecord{Stats: migrate.Stats{Status: migrate.StatusFailed, Error: "boom"}},
			want: `{"type":"summary","status":"failed","error":"boom","setup_ms":0`},
		{name: "not a record", rec: migrate.Stats{}, wantErr: "migrate.Stats is not a trace record"},
		{name: "pointer is not a record", rec: &full, wantErr: "is not a trace record"},
		{name: "infinite rate", rec: migrate.RoundRecord{BandwidthBytesPerSec: math.Inf(1)}, wantErr: "unsupported value"},
		{name: "NaN in a breakdown", rec: migrate.DowntimeBreakdown{PauseMs: math.NaN()}, wantErr: "unsupported value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := migrate.EncodeRecord(tt.rec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("EncodeRecord = %s, %v; want an error containing %q", b, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
				t.Fatalf("not one line: %q", s)
			}
			s = strings.TrimSuffix(s, "\n")
			if strings.HasPrefix(tt.want, "{") && strings.HasSuffix(tt.want, "}") {
				if s != tt.want {
					t.Fatalf("got  %s\nwant %s", s, tt.want)
				}
			} else if !strings.Contains(s, tt.want) {
				t.Fatalf("got %s\nwant it to contain %s", s, tt.want)
			}
		})
	}
}
