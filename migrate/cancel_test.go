package migrate_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"godwit/migrate"
	"godwit/migrate/migratetest"
)

// cancelAfterConn is the source's end: once after bytes are written it
// cancels the migration.
type cancelAfterConn struct {
	net.Conn
	after  int
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelAfterConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.after -= n; c.after <= 0 {
		c.once.Do(c.cancel)
	}
	return n, err
}

// TestCancelMidFrame cancels a paced migration in the middle of a
// PAGE_BATCH frame: the source finishes that frame before its ERROR, so
// the destination learns why (the cancel) instead of reading the ERROR as
// part of a broken frame.
func TestCancelMidFrame(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			vm := newVM(t)
			src, dst := tr.pair(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cc := &cancelAfterConn{Conn: src, after: 256 << 10, cancel: cancel}
			opts := migrate.Options{Bandwidth: 1 << 20, Compression: migrate.CompressionNone}
			r := migrateOnce(ctx, context.Background(), cc, dst, vm, &migratetest.Factory{}, opts)
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("Send error %v, want cancellation", r.err)
			}
			if !errors.Is(r.destErr, migrate.ErrPeerAborted) || !strings.Contains(r.destErr.Error(), "context canceled") {
				t.Fatalf("Receive error %v, want the source's ERROR with its reason", r.destErr)
			}
			checkSourceIntact(t, vm, r.stats)
			migrateAgain(t, vm, tr.pair)
		})
	}
}
