package net

import (
	"testing"

	"godwit/devices/virtio/virtiotest"
)

// benchBatch is how many packets one benchmark iteration moves: the
// driver posts a batch, notifies once and waits for one interrupt, as a
// busy guest driver does.
const benchBatch = 32

// BenchmarkTransmit measures the transmit path without KVM: the test
// driver posts benchBatch 1514-byte frames (one descriptor each, header
// included), notifies the queue through the BAR, and the worker pops the
// chains, checks the headers, writes every packet to the fake tap (a
// SOCK_SEQPACKET socket pair) and pushes the used entries; the driver
// waits for the MSI-X message and the benchmark drains the socket.
func BenchmarkTransmit(b *testing.B) {
	r := newRig(b, ^uint64(0))
	pkt := packet(0, 0, 0, 0, ethFrame(1514, 1))
	var bufs [benchBatch]uint64
	for i := range bufs {
		bufs[i] = r.d.Alloc(uint64(len(pkt)), 64)
		copy(r.d.Mem(bufs[i], uint64(len(pkt))), pkt)
	}
	sink := make([]byte, maxPacket)
	b.SetBytes(benchBatch * 1514)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := 0; k < benchBatch; k++ {
			head := r.tx.AvailIdx % r.tx.Size
			r.tx.SetDesc(head, bufs[k], uint32(len(pkt)), 0, 0)
			r.tx.Publish(head)
		}
		r.tx.Kick()
		r.waitUsed(r.tx, benchBatch)
		for k := 0; k < benchBatch; k++ {
			if _, err := r.tap.peer.Read(sink); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReceive measures the receive path without KVM: the driver posts
// benchBatch 2 KiB buffers (mergeable, as Linux does), the fake tap's peer
// writes benchBatch 1514-byte frames, and the receive goroutine queues
// them while the worker copies them into guest memory (marking the dirty
// bitmap), pushes the used entries and interrupts; the driver collects
// all of them.
func BenchmarkReceive(b *testing.B) {
	r := newRig(b, ^uint64(0))
	pkt := packet(0, 0, 0, 0, ethFrame(1514, 2))
	var bufs [benchBatch]uint64
	for i := range bufs {
		bufs[i] = r.d.Alloc(2048, 64)
	}
	b.SetBytes(benchBatch * 1514)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := 0; k < benchBatch; k++ {
			head := r.rx.AvailIdx % r.rx.Size
			r.rx.SetDesc(head, bufs[k], 2048, virtiotest.DescWrite, 0)
			r.rx.Publish(head)
		}
		r.rx.Kick()
		for k := 0; k < benchBatch; k++ {
			if _, err := r.tap.peer.Write(pkt); err != nil {
				b.Fatal(err)
			}
		}
		if used := r.waitUsed(r.rx, benchBatch); len(used) != benchBatch {
			b.Fatalf("%d used", len(used))
		}
	}
	b.StopTimer()
	if s := r.dev.Stats(); s.RxDropped != 0 {
		b.Fatalf("%d frames dropped", s.RxDropped)
	}
}
