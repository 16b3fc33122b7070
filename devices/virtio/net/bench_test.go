package net

import (
	"syscall"
	"testing"
	"time"

	"godwit/devices/virtio/virtiotest"
)

// benchShape is one packet shape of the transmit and receive benchmarks.
type benchShape struct {
	name  string
	frame int    // Ethernet frame bytes (without the virtio-net header)
	gso   bool   // a 64 KiB TCPv4 TSO frame, as Linux sends with TSO
	rxBuf uint32 // bytes per receive buffer the driver posts (mergeable)
	batch int    // packets per iteration: one notification, one interrupt
}

// benchShapes are the benchmarked shapes: MTU-sized frames, and 64 KiB TSO
// frames in page-sized mergeable buffers (16 per frame), as Linux posts
// them with GUEST_TSO and MRG_RXBUF, and lone ACK-sized frames.
var benchShapes = []benchShape{
	{name: "1500", frame: 1514, rxBuf: 2048, batch: 32},
	{name: "64KiB-TSO", frame: 65000, gso: true, rxBuf: 4096, batch: 8},
	// One packet per notification and interrupt: an isolated TCP ACK,
	// where wake-ups, not copies, are the cost.
	{name: "single-ACK", frame: 66, rxBuf: 2048, batch: 1},
}

// benchPacket returns the header and frame of shape s.
func benchPacket(s benchShape, seed byte) []byte {
	if s.gso {
		return gsoPacket(hdrGSOTCPv4, 54, 1448, ethFrame(s.frame, seed))
	}
	return packet(0, 0, 0, 0, ethFrame(s.frame, seed))
}

// benchRig is a device with 256-entry queues over a pipeTap (a
// SOCK_SEQPACKET socket pair standing in for the tap), all offered
// features negotiated (EVENT_IDX, MRG_RXBUF, TSO).
func benchRig(b *testing.B) *rig {
	p := newPipeTap(b)
	dev, err := New(p, Options{MAC: testMAC})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dev.Close() })
	vr := virtiotest.NewRig(b, dev, ^uint64(0), QueueSize, QueueSize, 64)
	return &rig{t: b, m: vr.M, d: vr.D, dev: dev, tap: p, acked: vr.Acked,
		rx: vr.Queues[rxQueue], tx: vr.Queues[txQueue], ctrl: vr.Queues[ctrlQueue]}
}

// cpuTime returns the process's user plus system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report adds packets per second and CPU time per packet (the whole
// process: device, fake driver and fake tap peer; what matters under TCG,
// where CPU time, not wall time, is scarce) to the benchmark's results.
func report(b *testing.B, packets int, cpu0 time.Duration) {
	cpu := cpuTime(b) - cpu0
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "pkt/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(packets), "cpu-ns/pkt")
}

// BenchmarkTx measures the transmit path without KVM: per iteration the
// driver posts a batch of packets (one descriptor each, header included),
// notifies the queue once through the BAR and waits for the used entries
// and the interrupt; the device writes every packet to the fake tap, whose
// peer the benchmark drains.
func BenchmarkTx(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(s.name, func(b *testing.B) {
			r := benchRig(b)
			pkt := benchPacket(s, 1)
			bufs := make([]uint64, s.batch)
			for i := range bufs {
				bufs[i] = r.d.Alloc(uint64(len(pkt)), 64)
				copy(r.d.Mem(bufs[i], uint64(len(pkt))), pkt)
			}
			sink := make([]byte, maxPacket+1)
			b.SetBytes(int64(s.batch * s.frame))
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := 0; k < s.batch; k++ {
					head := r.tx.AvailIdx % r.tx.Size
					r.tx.SetDesc(head, bufs[k], uint32(len(pkt)), 0, 0)
					r.tx.Publish(head)
				}
				r.tx.Kick()
				r.waitUsed(r.tx, s.batch)
				for k := 0; k < s.batch; k++ {
					if n, err := r.tap.peer.Read(sink); err != nil || n != len(pkt) {
						b.Fatalf("peer read %d bytes, %v", n, err)
					}
				}
			}
			b.StopTimer()
			report(b, b.N*s.batch, cpu0)
		})
	}
}

// BenchmarkRx measures the receive path without KVM: per iteration the
// driver posts enough mergeable buffers for a batch of packets and
// notifies once, the fake tap's peer writes the batch, and the driver
// waits until every buffer is used; the device copies the frames into
// guest memory (marking the dirty bitmap), fixes up the headers, pushes
// the used entries and interrupts.
func BenchmarkRx(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(s.name, func(b *testing.B) {
			r := benchRig(b)
			pkt := benchPacket(s, 2)
			per := (len(pkt) + int(s.rxBuf) - 1) / int(s.rxBuf) // buffers per packet
			nbuf := per * s.batch
			if nbuf > int(r.rx.Size) {
				b.Fatalf("%d buffers per batch, queue of %d", nbuf, r.rx.Size)
			}
			bufs := make([]uint64, nbuf)
			for i := range bufs {
				bufs[i] = r.d.Alloc(uint64(s.rxBuf), 64)
			}
			b.SetBytes(int64(s.batch * s.frame))
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range bufs {
					head := r.rx.AvailIdx % r.rx.Size
					r.rx.SetDesc(head, bufs[k], s.rxBuf, virtiotest.DescWrite, 0)
					r.rx.Publish(head)
				}
				r.rx.Kick()
				for k := 0; k < s.batch; k++ {
					if _, err := r.tap.peer.Write(pkt); err != nil {
						b.Fatal(err)
					}
				}
				if used := r.waitUsed(r.rx, nbuf); len(used) != nbuf {
					b.Fatalf("%d used, want %d", len(used), nbuf)
				}
			}
			b.StopTimer()
			report(b, b.N*s.batch, cpu0)
			if st := r.dev.Stats(); st.RxDropped != 0 || st.RxInvalid != 0 {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}
