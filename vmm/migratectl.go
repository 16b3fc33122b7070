package vmm

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"godwit/internal/gcquiet"
	"godwit/migrate"
	"godwit/migrate/secure"
	"godwit/vmm/api"
)

var _ api.Migrator = (*VM)(nil)

// outgoing is the state of this VM's current or last outgoing migration.
type outgoing struct {
	mu       sync.Mutex
	status   string // none, active, completed, failed, cancelled
	err      string
	progress migrate.Progress
	stats    *migrate.Stats
	rounds   []migrate.RoundRecord // the latest (maxRoundRecords) for GET /migrate
	cancel   context.CancelFunc
	done     chan struct{} // closed when the active migration ends
	// read is closed once an API client has been told the final status
	// of a completed migration; the source VM stops only then (or after
	// finalStatusGrace), so `godwit migrate` never finds the socket gone.
	read chan struct{}
	// dirtyLog says whether KVM dirty logging may be on for any RAM
	// slot (GET /vm's dirty_log).
	dirtyLog atomic.Bool
	// dirtyModes are the manual dirty-log modes (kvm.DirtyLog*) enabled
	// on the KVM VM by the first StartDirtyLog; dirtyModesSet says that
	// happened. Only StartDirtyLog writes them, before the engine reads.
	dirtyModes    uint64
	dirtyModesSet bool
}

// finalStatusGrace bounds how long a migrated source waits for a client
// to read the final status before it stops anyway.
const finalStatusGrace = 5 * time.Second

// migrationStatus is GET /migrate's statistics while a migration runs.
type migrationProgress struct {
	Status string           `json:"status"`
	Round  int              `json:"round"`
	Live   migrate.Progress `json:"progress"`
}

// dialTCP connects to a "tcp:HOST:PORT" address.
func dialTCP(ctx context.Context, to string) (net.Conn, error) {
	addr, ok := strings.CutPrefix(to, "tcp:")
	if !ok {
		return nil, fmt.Errorf("destination %q: want tcp:HOST:PORT", to)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to the destination: %w", err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return conn, nil
}

// StartMigration implements api.Migrator: it connects to the destination
// and runs the pre-copy migration in the background. On success the VM
// stops here (cleanly, "migrated"); on failure it keeps running.
func (v *VM) StartMigration(ctx context.Context, req api.MigrateRequest) error {
	comp := migrate.CompressionLZ4
	if req.Compress != "" {
		c, err := migrate.ParseCompression(req.Compress)
		if err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		comp = c
	}
	channel, err := migrationChannel(req)
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	v.runMu.Lock()
	state := v.state
	v.runMu.Unlock()
	if state != "running" && state != "paused" {
		return fmt.Errorf("%w: cannot migrate a VM that is %s", api.ErrInvalidState, state)
	}
	o := &v.out
	o.mu.Lock()
	if o.status == "active" {
		o.mu.Unlock()
		return fmt.Errorf("%w: a migration is already running", api.ErrInvalidState)
	}
	// The migration's source: the VM, or with its disks the VM wrapped
	// with read-only descriptors of its images.
	var src migrate.Source = v
	var disks *storageSource
	if req.IncludeStorage {
		var err error
		if disks, err = v.openStorageSource(); err != nil {
			o.mu.Unlock()
			return fmt.Errorf("sending the disks: %w", err)
		}
		src = disks
	}
	closeDisks := func() {
		if disks != nil {
			disks.Close()
		}
	}
	mctx, cancel := context.WithCancel(context.Background())
	o.status, o.err, o.stats, o.cancel, o.progress = "active", "", nil, cancel, migrate.Progress{}
	o.done = make(chan struct{})
	o.read = make(chan struct{})
	o.rounds = nil
	// MigrationStatus closes o.read and then clears the field: the
	// goroutine below keeps its own reference.
	read := o.read
	o.mu.Unlock()

	opts := migrate.Options{
		DowntimeTarget: time.Duration(req.DowntimeMS) * time.Millisecond,
		Bandwidth:      req.Bandwidth,
		Compression:    comp,
		Timeout:        time.Duration(req.TimeoutMS) * time.Millisecond,
		AutoConverge:   req.AutoConverge == nil || *req.AutoConverge,
		Progress: func(p migrate.Progress) {
			o.mu.Lock()
			o.progress = p
			o.mu.Unlock()
		},
		Trace: o.addRound,
	}
	conn, err := dialTCP(ctx, req.To)
	if err != nil {
		o.finish(nil, err, false)
		cancel()
		closeDisks()
		return err
	}
	if channel != nil {
		// Authenticated on Send's first write: a refusal fails Send
		// before anything of the VM is sent, and the VM runs on.
		conn = secure.Client(conn, channel)
	}
	v.log.Info("migration started", "to", req.To, "channel", channelName(channel), "storage", req.IncludeStorage)
	go func() {
		defer cancel()
		defer conn.Close()
		defer closeDisks()
		// No garbage collection while the VM moves: its
		// stop-the-world phases cost tens of ms under an emulated CPU.
		quiet := gcquiet.Start()
		stats, err := migrate.Send(mctx, conn, src, opts)
		quiet()
		o.finish(&stats, err, mctx.Err() != nil)
		if err != nil {
			v.log.Error("migration failed; the VM keeps running here", "err", err)
			return
		}
		v.log.Info("migration completed", "downtime_ms", stats.DowntimeMs, "total_ms", stats.TotalMs, "bytes", stats.TransferredBytes)
		// The guest runs on the destination now; this paused copy only
		// waits until the final statistics have been read.
		t := time.NewTimer(finalStatusGrace)
		select {
		case <-read:
		case <-t.C:
		}
		t.Stop()
		v.requestStop(StopReason{Clean: true, What: "migrated to " + req.To})
	}()
	return nil
}

// maxRoundRecords bounds the round records GET /migrate carries: the
// most recent ones. A client that polls (as `godwit migrate --trace`
// does, twice a second) sees every round unless more than this many end
// between two polls.
const maxRoundRecords = 1000

// addRound keeps a round's record for GET /migrate.
func (o *outgoing) addRound(r migrate.RoundRecord) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.rounds) == maxRoundRecords {
		o.rounds = append(o.rounds[:0], o.rounds[1:]...)
	}
	o.rounds = append(o.rounds, r)
}

// finish records the end of a migration.
func (o *outgoing) finish(stats *migrate.Stats, err error, cancelled bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stats = stats
	if o.done != nil {
		close(o.done)
		o.done = nil
	}
	switch {
	case err == nil:
		o.status = "completed"
	case cancelled:
		o.status, o.err = "cancelled", err.Error()
	default:
		o.status, o.err = "failed", err.Error()
	}
}

// MigrationStatus implements api.Migrator.
func (v *VM) MigrationStatus() api.MigrationInfo {
	o := &v.out
	o.mu.Lock()
	defer o.mu.Unlock()
	info := api.MigrationInfo{Status: o.status, Error: o.err}
	if info.Status == "" {
		info.Status = "none"
	}
	if info.Status == "completed" && o.read != nil {
		close(o.read)
		o.read = nil
	}
	var stats any
	switch {
	case o.stats != nil:
		stats = o.stats
	case o.status == "active":
		stats = migrationProgress{Status: "active", Round: o.progress.Round, Live: o.progress}
	}
	if stats != nil {
		if b, err := json.Marshal(stats); err == nil {
			info.Stats = b
		}
	}
	if len(o.rounds) > 0 {
		if b, err := json.Marshal(o.rounds); err == nil {
			info.Rounds = b
		}
	}
	return info
}

// WaitMigration implements api.Migrator.
func (v *VM) WaitMigration(ctx context.Context, d time.Duration) api.MigrationInfo {
	v.out.mu.Lock()
	done := v.out.done
	v.out.mu.Unlock()
	if done != nil {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return v.MigrationStatus()
}

// CancelMigration implements api.Migrator.
func (v *VM) CancelMigration(ctx context.Context) error {
	o := &v.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status == "active" && o.cancel != nil {
		o.cancel()
	}
	return nil
}
