package net

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// Queue notification paths of the benchmarks: how the driver's kick
// reaches the device's worker.
const (
	// kickMMIO writes the notify register through the BAR: the path of
	// a notification without an ioeventfd (the vCPU thread calls
	// Transport.Notify).
	kickMMIO = "mmio"
	// kickIOEventFD signals an eventfd the transport's worker watches
	// (Transport.WatchNotifyFD), as KVM does for a registered
	// ioeventfd: the path godwit takes in a VM.
	kickIOEventFD = "ioeventfd"
	// kickReader signals an eventfd a separate goroutine reads, which
	// then calls Transport.Notify: how vmm/notify.go delivered ioeventfd
	// notifications before the worker watched them itself, kept for
	// comparison.
	kickReader = "reader"
)

// kickModes are the notification paths the benchmarks compare.
var kickModes = []string{kickMMIO, kickIOEventFD, kickReader}

// kicker returns the driver's notification of queue q by path mode.
func kicker(b *testing.B, r *rig, v *virtiotest.VCPU, q *virtiotest.Queue, mode string) func() {
	switch mode {
	case kickMMIO:
		return q.Kick
	case kickIOEventFD:
		return v.IOEventFD(q)
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		b.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "notify") // on the Go poller
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf [8]byte
		for {
			if _, err := f.Read(buf[:]); err != nil {
				if !errors.Is(err, os.ErrClosed) {
					b.Error(err)
				}
				return
			}
			r.m.Transport.Notify(q.Index)
		}
	}()
	b.Cleanup(func() {
		f.Close()
		<-done
	})
	one := binary.NativeEndian.AppendUint64(nil, 1)
	return func() {
		if _, err := unix.Write(fd, one); err != nil {
			b.Fatal(err)
		}
	}
}

// usage is the process's resource use at a point of a benchmark.
type usage struct {
	cpu   time.Duration // user plus system CPU time
	ctxsw int64         // context switches, voluntary and not
}

// resUsage returns the process's usage now.
func resUsage(b *testing.B) usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return usage{time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw + ru.Nivcsw}
}

// report adds packets per second, CPU time per packet and context
// switches per packet (the whole process: device, fake driver and fake
// tap peer; what matters under TCG, where CPU time, not wall time, is
// scarce, and every thread wake-up is expensive) to the benchmark's
// results.
func report(b *testing.B, packets int, u0 usage) {
	u := resUsage(b)
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "pkt/s")
	b.ReportMetric(float64((u.cpu-u0.cpu).Nanoseconds())/float64(packets), "cpu-ns/pkt")
	b.ReportMetric(float64(u.ctxsw-u0.ctxsw)/float64(packets), "ctxsw/pkt")
}

// BenchmarkTx measures the transmit path without KVM: per iteration the
// driver (a virtiotest.VCPU: a thread that sleeps in the kernel until an
// interrupt, as a vCPU does) posts a batch of packets (one descriptor
// each, header included), notifies the queue once and waits for the used
// entries and the interrupt; the device writes every packet to the fake
// tap, whose peer the benchmark drains. Each shape runs with every
// notification path (kickModes); kick=ioeventfd is the path in a VM.
func BenchmarkTx(b *testing.B) {
	for _, s := range benchShapes {
		for _, mode := range kickModes {
			b.Run(s.name+"/kick="+mode, func(b *testing.B) { benchTx(b, s, mode) })
		}
	}
}

// benchTx is one BenchmarkTx case.
func benchTx(b *testing.B, s benchShape, mode string) {
	runtime.LockOSThread() // the vCPU's thread
	defer runtime.UnlockOSThread()
	r := benchRig(b)
	v := virtiotest.NewVCPU(b, r.m)
	kick := kicker(b, r, v, r.tx, mode)
	pkt := benchPacket(s, 1)
	bufs := make([]uint64, s.batch)
	for i := range bufs {
		bufs[i] = r.d.Alloc(uint64(len(pkt)), 64)
		copy(r.d.Mem(bufs[i], uint64(len(pkt))), pkt)
	}
	sink := make([]byte, maxPacket+1)
	b.SetBytes(int64(s.batch * s.frame))
	u0 := resUsage(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := 0; k < s.batch; k++ {
			head := r.tx.AvailIdx % r.tx.Size
			r.tx.SetDesc(head, bufs[k], uint32(len(pkt)), 0, 0)
			r.tx.Publish(head)
		}
		kick()
		v.WaitUsed(r.tx, s.batch)
		for k := 0; k < s.batch; k++ {
			if n, err := r.tap.peer.Read(sink); err != nil || n != len(pkt) {
				b.Fatalf("peer read %d bytes, %v", n, err)
			}
		}
	}
	b.StopTimer()
	report(b, b.N*s.batch, u0)
}

// BenchmarkRx measures the receive path without KVM: per iteration the
// driver (a virtiotest.VCPU) posts enough mergeable buffers for a batch of packets and
// notifies once, the fake tap's peer writes the batch, and the driver
// waits until every buffer is used; the device copies the frames into
// guest memory (marking the dirty bitmap), fixes up the headers, pushes
// the used entries and interrupts.
//
// Each shape runs with every notification path (kickModes) for the
// driver's receive queue kicks.
func BenchmarkRx(b *testing.B) {
	for _, s := range benchShapes {
		for _, mode := range kickModes {
			b.Run(s.name+"/kick="+mode, func(b *testing.B) { benchRx(b, s, mode) })
		}
	}
}

// benchRx is one BenchmarkRx case.
func benchRx(b *testing.B, s benchShape, mode string) {
	runtime.LockOSThread() // the vCPU's thread
	defer runtime.UnlockOSThread()
	r := benchRig(b)
	v := virtiotest.NewVCPU(b, r.m)
	kick := kicker(b, r, v, r.rx, mode)
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
	u0 := resUsage(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range bufs {
			head := r.rx.AvailIdx % r.rx.Size
			r.rx.SetDesc(head, bufs[k], s.rxBuf, virtiotest.DescWrite, 0)
			r.rx.Publish(head)
		}
		kick()
		for k := 0; k < s.batch; k++ {
			if _, err := r.tap.peer.Write(pkt); err != nil {
				b.Fatal(err)
			}
		}
		if used := v.WaitUsed(r.rx, nbuf); len(used) != nbuf {
			b.Fatalf("%d used, want %d", len(used), nbuf)
		}
	}
	b.StopTimer()
	report(b, b.N*s.batch, u0)
	if st := r.dev.Stats(); st.RxDropped != 0 || st.RxInvalid != 0 {
		b.Fatalf("stats %+v", st)
	}
}
