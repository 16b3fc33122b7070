package migrate_test

import (
	"context"
	"sync"
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
		var wg sync.WaitGroup
		wg.Add(1)
		var tgt migrate.Target
		var derr error
		go func() {
			defer wg.Done()
			tgt, _, derr = migrate.Receive(context.Background(), dst, f.New, migrate.ReceiveOptions{AssumeZeroed: true})
		}()
		st, err := migrate.Send(context.Background(), src, vm, migrate.Options{Compression: comp})
		wg.Wait()
		if err != nil || derr != nil {
			b.Fatalf("Send: %v; Receive: %v", err, derr)
		}
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
