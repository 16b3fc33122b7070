package pingpong

import (
	"context"
	"testing"

	"godwit/migrate"
)

func TestSummarize(t *testing.T) {
	hop := func(ms float64, b uint64) Hop { return Hop{Stats: migrate.Stats{DowntimeMs: ms, TransferredBytes: b}} }
	tests := []struct {
		name string
		hops []Hop
		want Summary
	}{
		{"none", nil, Summary{}},
		{"one", []Hop{hop(5, 10)}, Summary{Hops: 1, MinMs: 5, MedianMs: 5, P99Ms: 5, MaxMs: 5, TotalBytes: 10}},
		{"even", []Hop{hop(4, 1), hop(1, 1), hop(3, 1), hop(2, 1)}, Summary{Hops: 4, MinMs: 1, MedianMs: 2.5, P99Ms: 4, MaxMs: 4, TotalBytes: 4}},
		{"odd", []Hop{hop(9, 0), hop(1, 0), hop(5, 0)}, Summary{Hops: 3, MinMs: 1, MedianMs: 5, P99Ms: 9, MaxMs: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Summarize(tt.hops); got != tt.want {
				t.Errorf("Summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"no binary", Options{Dir: t.TempDir(), Hops: 1, Timeout: 1}},
		{"no dir", Options{Godwit: "godwit", Hops: 1, Timeout: 1}},
		{"no timeout", Options{Godwit: "godwit", Dir: t.TempDir(), Hops: 1}},
		{"negative hops", Options{Godwit: "godwit", Dir: t.TempDir(), Hops: -1, Timeout: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Run(context.Background(), tt.o); err == nil {
				t.Fatal("Run accepted bad options")
			}
		})
	}
}
