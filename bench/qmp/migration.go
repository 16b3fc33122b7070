package qmp

import (
	"context"
	"encoding/json"
	"fmt"
)

// Migration statuses of query-migrate and the MIGRATION event that end a
// migration.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Terminal reports whether a migration in status s has ended.
func Terminal(s string) bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// RAMStats is the "ram" object of query-migrate (the fields the benchmark
// reads).
type RAMStats struct {
	// Transferred is the bytes of the migration stream sent so far.
	Transferred uint64 `json:"transferred"`
	// Remaining is the bytes of RAM still to send.
	Remaining uint64 `json:"remaining"`
	// Total is the guest RAM size in bytes.
	Total uint64 `json:"total"`
	// Duplicate counts zero pages (sent as a flag).
	Duplicate uint64 `json:"duplicate"`
	// Normal counts pages sent in full.
	Normal uint64 `json:"normal"`
	// NormalBytes is the bytes of those pages.
	NormalBytes uint64 `json:"normal-bytes"`
	// DirtyPagesRate is the guest's dirty rate QEMU measured, pages/s.
	DirtyPagesRate uint64 `json:"dirty-pages-rate"`
	// Mbps is the throughput QEMU measured, megabits per second.
	Mbps float64 `json:"mbps"`
	// DirtySyncCount counts dirty-bitmap syncs: one per iteration.
	DirtySyncCount uint64 `json:"dirty-sync-count"`
}

// MigrationInfo is query-migrate's answer (the fields the benchmark reads).
// Times are milliseconds on the source QEMU's clock.
type MigrationInfo struct {
	// Status is setup, active, completed, failed, cancelled, ...
	Status string `json:"status"`
	// TotalTime is from the start of the migration to its end (or so far).
	TotalTime int64 `json:"total-time"`
	// Downtime is, once completed, from stopping the VM to the end of
	// the migration on the source.
	Downtime int64 `json:"downtime"`
	// ExpectedDowntime is QEMU's estimate while the migration runs.
	ExpectedDowntime int64 `json:"expected-downtime"`
	// SetupTime is the setup phase.
	SetupTime int64 `json:"setup-time"`
	// CPUThrottlePercentage is the auto-converge throttle.
	CPUThrottlePercentage int `json:"cpu-throttle-percentage"`
	// ErrorDesc says why a migration failed.
	ErrorDesc string `json:"error-desc"`
	// RAM is the RAM statistics.
	RAM *RAMStats `json:"ram"`
}

// QueryMigrate runs query-migrate and returns the parsed answer and the
// answer verbatim.
func (c *Client) QueryMigrate(ctx context.Context) (MigrationInfo, json.RawMessage, error) {
	raw, err := c.Execute(ctx, "query-migrate", nil)
	if err != nil {
		return MigrationInfo{}, nil, err
	}
	var info MigrationInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return MigrationInfo{}, raw, fmt.Errorf("qmp: query-migrate answer %.200s: %w", raw, err)
	}
	return info, raw, nil
}

// MigrationEventStatus returns the status a MIGRATION event reports, and
// false for any other event.
func MigrationEventStatus(ev Event) (string, bool) {
	if ev.Name != "MIGRATION" {
		return "", false
	}
	var d struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(ev.Data, &d) != nil || d.Status == "" {
		return "", false
	}
	return d.Status, true
}

// WaitMigrationEnd waits for a MIGRATION event with a terminal status
// (the "events" migration capability must be on) and returns the status.
func (c *Client) WaitMigrationEnd(ctx context.Context) (string, error) {
	ev, err := c.WaitEvent(ctx, func(ev Event) bool {
		s, ok := MigrationEventStatus(ev)
		return ok && Terminal(s)
	})
	if err != nil {
		return "", err
	}
	s, _ := MigrationEventStatus(ev)
	return s, nil
}

// Capability is one entry of migrate-set-capabilities.
type Capability struct {
	// Capability is the capability's name, e.g. "events".
	Capability string `json:"capability"`
	// State turns it on or off.
	State bool `json:"state"`
}

// SetCapabilities turns the named migration capabilities on.
func (c *Client) SetCapabilities(ctx context.Context, names ...string) error {
	caps := make([]Capability, len(names))
	for i, n := range names {
		caps[i] = Capability{Capability: n, State: true}
	}
	_, err := c.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps})
	return err
}
