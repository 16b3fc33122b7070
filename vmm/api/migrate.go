package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MigrateRequest is the body of PUT /migrate: send this VM to a receiving
// godwit.
type MigrateRequest struct {
	// To is the destination, "tcp:HOST:PORT".
	To string `json:"to"`
	// DowntimeMS is the downtime target in milliseconds (0 = default).
	DowntimeMS int64 `json:"downtime_ms,omitempty"`
	// Bandwidth caps the migration in bytes per second (0 = unlimited).
	Bandwidth int64 `json:"bandwidth,omitempty"`
	// Compress is "lz4" (default) or "none".
	Compress string `json:"compress,omitempty"`
	// TimeoutMS fails the migration after this long (0 = default).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// AutoConverge throttles the vCPUs when rounds stop shrinking.
	AutoConverge *bool `json:"auto_converge,omitempty"`
	// IncludeStorage sends the VM's disks along with its memory (a
	// storage migration): the destination creates new images from the
	// stream. Without it, the destination opens the same images
	// (shared storage).
	IncludeStorage bool `json:"include_storage,omitempty"`
	// PSKFile authenticates the destination and encrypts the migration
	// with the pre-shared key in this file (package migrate/secure). The
	// VM process reads this and the TLS files: absolute paths on its
	// host.
	PSKFile string `json:"psk_file,omitempty"`
	// TLSCert, TLSKey and TLSCA select mutual TLS instead: this VM's PEM
	// client certificate and key, and the CA certificates that verify
	// the destination's certificate.
	TLSCert string `json:"tls_cert,omitempty"`
	TLSKey  string `json:"tls_key,omitempty"`
	TLSCA   string `json:"tls_ca,omitempty"`
	// TLSPeerName is the name the destination's certificate must carry
	// (default: the host of To).
	TLSPeerName string `json:"tls_peer_name,omitempty"`
}

// validate checks the fields of a decoded migrate request.
func (m MigrateRequest) validate() error {
	switch {
	case !strings.HasPrefix(m.To, "tcp:") || len(m.To) <= len("tcp:"):
		return badRequest(fmt.Sprintf(`"to" must be tcp:HOST:PORT, got %q`, m.To))
	case m.DowntimeMS < 0 || m.Bandwidth < 0 || m.TimeoutMS < 0:
		return badRequest(`"downtime_ms", "bandwidth" and "timeout_ms" must not be negative`)
	case m.Compress != "" && m.Compress != "lz4" && m.Compress != "none":
		return badRequest(fmt.Sprintf(`"compress" must be lz4 or none, got %q`, m.Compress))
	}
	return nil
}

// MigrationInfo is the body of GET /migrate.
type MigrationInfo struct {
	// Status is "none", "active", "completed", "failed" or "cancelled".
	Status string `json:"status"`
	// Error is the failure reason when Status is "failed".
	Error string `json:"error,omitempty"`
	// Stats are the migration statistics so far (names as in QEMU's
	// query-migrate where they overlap); once the migration completed,
	// they include the downtime breakdown ("stop_and_copy").
	Stats json.RawMessage `json:"stats,omitempty"`
	// Rounds are the records of the most recent memory rounds, oldest
	// first (a JSON array of migrate.RoundRecord, the trace's round
	// records: docs/trace.md).
	Rounds json.RawMessage `json:"rounds,omitempty"`
}

// Migrator is what a Controller implements to support live migration.
type Migrator interface {
	// StartMigration starts sending the VM; it returns once the
	// migration runs (or fails to start).
	StartMigration(ctx context.Context, req MigrateRequest) error
	// MigrationStatus reports the current or last migration.
	MigrationStatus() MigrationInfo
	// CancelMigration aborts a migration before switchover.
	CancelMigration(ctx context.Context) error
	// WaitMigration blocks until no migration is active, d has passed or
	// ctx ends, then reports the migration.
	WaitMigration(ctx context.Context, d time.Duration) MigrationInfo
}

// maxWait bounds GET /migrate?wait_ms=.
const maxWait = 10 * time.Second

// migrator returns the controller's Migrator, or a 409 error.
func (s *Server) migrator() (Migrator, error) {
	m, ok := s.c.(Migrator)
	if !ok {
		return nil, fmt.Errorf("%w: this VM does not support migration", ErrInvalidState)
	}
	return m, nil
}

func (s *Server) handleMigrate(r *http.Request) (any, error) {
	m, err := s.migrator()
	if err != nil {
		return nil, err
	}
	var req MigrateRequest
	if err := decodeJSON(r.Body, &req, false); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	if err := m.StartMigration(r.Context(), req); err != nil {
		return nil, err
	}
	return m.MigrationStatus(), nil
}

func (s *Server) handleMigrationStatus(r *http.Request) (any, error) {
	m, err := s.migrator()
	if err != nil {
		return nil, err
	}
	if w := r.URL.Query().Get("wait_ms"); w != "" {
		ms, err := strconv.ParseUint(w, 10, 32)
		if err != nil || time.Duration(ms)*time.Millisecond > maxWait {
			return nil, badRequest(fmt.Sprintf("wait_ms must be 0..%d, got %q", maxWait.Milliseconds(), w))
		}
		return m.WaitMigration(r.Context(), time.Duration(ms)*time.Millisecond), nil
	}
	return m.MigrationStatus(), nil
}

func (s *Server) handleMigrationCancel(r *http.Request) (any, error) {
	m, err := s.migrator()
	if err != nil {
		return nil, err
	}
	var empty struct{}
	if err := decodeJSON(r.Body, &empty, true); err != nil {
		return nil, err
	}
	if err := m.CancelMigration(r.Context()); err != nil {
		return nil, err
	}
	return m.MigrationStatus(), nil
}

// Migrate asks the VM to start migrating.
func (c *Client) Migrate(ctx context.Context, req MigrateRequest) (MigrationInfo, error) {
	var info MigrationInfo
	err := c.do(ctx, http.MethodPut, "/migrate", req, &info, true)
	return info, err
}

// MigrationStatus reports the current or last migration. With wait > 0
// the server answers as soon as the migration ends, or after wait.
func (c *Client) MigrationStatus(ctx context.Context, wait time.Duration) (MigrationInfo, error) {
	var info MigrationInfo
	path := "/migrate"
	if wait > 0 {
		path += "?wait_ms=" + strconv.FormatInt(min(wait, maxWait).Milliseconds(), 10)
	}
	err := c.do(ctx, http.MethodGet, path, nil, &info, true)
	return info, err
}

// CancelMigration aborts a running migration.
func (c *Client) CancelMigration(ctx context.Context) (MigrationInfo, error) {
	var info MigrationInfo
	err := c.do(ctx, http.MethodPut, "/migrate/cancel", nil, &info, true)
	return info, err
}
