package migrate_test

import (
	"context"
	"net"
	"testing"

	"godwit/migrate"
	"godwit/migrate/migratetest"
)

// BenchmarkSendLoopback migrates a 256 MiB fake VM (half zero pages, a
// quarter text, a quarter random) over loopback TCP; MB/s is guest RAM
// migrated per second, wire-MB/s what crossed the socket.
func BenchmarkSendLoopback(b *testing.B) {
	const size = 256 << 20
	for _, comp := range []migrate.Compression{migrate.CompressionNone, migrate.CompressionLZ4} {
		b.Run(comp.String(), func(b *testing.B) {
			vm, err := migratetest.New(size, 1)
			if err != nil {
				b.Fatal(err)
			}
			defer vm.Close()
			b.SetBytes(size)
			benchMigrations(b, vm, comp, tcpPair)
		})
	}
}

// benchMigrations migrates vm over a fresh connection from pair every
// iteration, with compression comp, and reports wire-MB/s besides the
// MB/s of guest RAM (the caller's SetBytes).
func benchMigrations(b *testing.B, vm *migratetest.VM, comp migrate.Compression, pair connPair) {
	b.Helper()
	f := &migratetest.Factory{CleanTargets: true}
	var wire uint64
	for b.Loop() {
		src, dst := pair(b)
		st, tgt := benchMigrate(b, src, dst, vm, f, migrate.Options{Compression: comp})
		wire += st.TransferredBytes
		b.StopTimer()
		tgt.(*migratetest.Target).Close()
		src.Close()
		dst.Close()
		vm.Resume(context.Background())
		b.StartTimer()
	}
	b.ReportMetric(float64(wire)/1e6/b.Elapsed().Seconds(), "wire-MB/s")
}

// benchMigrate migrates vm from src to dst as godwit receive does (into
// fresh, zeroed RAM from f) with migrateOnceWith, fails b if either side
// failed, and returns the sender's statistics and the received target.
func benchMigrate(b *testing.B, src, dst net.Conn, vm migrate.Source, f *migratetest.Factory, opts migrate.Options) (migrate.Stats, migrate.Target) {
	b.Helper()
	ctx := context.Background()
	r := migrateOnceWith(ctx, ctx, src, dst, vm, f, opts, migrate.ReceiveOptions{AssumeZeroed: true})
	if r.err != nil || r.destErr != nil {
		b.Fatalf("Send: %v; Receive: %v", r.err, r.destErr)
	}
	return r.stats, r.target
}
