package blk

import (
	"os"
	"runtime"
	"testing"

	"godwit/devices/virtio/virtiotest"
)

// BenchmarkSequentialRead reads an image file sequentially through the
// whole device path without KVM: the test driver (a virtiotest.VCPU: a
// thread that sleeps in the kernel until an interrupt, as a vCPU does)
// posts a request (header, one data buffer, status) and notifies the
// queue, through an eventfd the worker watches as KVM's ioeventfds are
// (kick=ioeventfd, the path in a VM) or the notify register (kick=mmio);
// the worker pops the chain, preads into guest memory, pushes the used
// entry and sends the MSI-X message the driver waits for.
func BenchmarkSequentialRead(b *testing.B) {
	const imageSize = 32 << 20
	for _, bs := range []struct {
		name string
		size uint32
	}{{"4KiB", 4 << 10}, {"64KiB", 64 << 10}} {
		for _, kick := range []string{"ioeventfd", "mmio"} {
			b.Run(bs.name+"/kick="+kick, func(b *testing.B) {
				benchSequentialRead(b, imageSize, bs.size, kick == "ioeventfd")
			})
		}
	}
}

// benchSequentialRead is one BenchmarkSequentialRead case: size-byte
// reads of an image of imageSize bytes.
func benchSequentialRead(b *testing.B, imageSize int64, size uint32, ioeventfd bool) {
	path := tempImage(b, b.TempDir(), imageSize)
	// Real data, so the page cache holds pages, not holes.
	if err := os.WriteFile(path, pattern(int(imageSize), 3), 0o644); err != nil {
		b.Fatal(err)
	}
	disk, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { disk.Close() })
	runtime.LockOSThread() // the vCPU's thread
	defer runtime.UnlockOSThread()
	r := newRigFor(b, disk, nil, ^uint64(0))
	v := virtiotest.NewVCPU(b, r.m)
	kick := r.q.Kick
	if ioeventfd {
		kick = v.IOEventFD(r.q)
	}
	hdr := r.d.Alloc(16, 8)
	data := r.d.Alloc(uint64(size), 4096)
	st := r.d.Alloc(1, 1)
	sectors := uint64(size / SectorSize)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sector := uint64(i) * sectors % uint64(imageSize/SectorSize)
		copy(r.d.Mem(hdr, 16), header(TypeIn, sector))
		head := uint16(i*3) % r.q.Size
		r.q.SetDesc(head, hdr, 16, virtiotest.DescNext, (head+1)%r.q.Size)
		r.q.SetDesc((head+1)%r.q.Size, data, size, virtiotest.DescWrite|virtiotest.DescNext, (head+2)%r.q.Size)
		r.q.SetDesc((head+2)%r.q.Size, st, 1, virtiotest.DescWrite, 0)
		r.q.Publish(head)
		kick()
		if used := v.WaitUsed(r.q, 1); len(used) != 1 || used[0].Len != size+1 {
			b.Fatalf("used %+v", used)
		}
	}
	b.StopTimer()
	if s := r.d.Mem(st, 1)[0]; s != StatusOK {
		b.Fatalf("status %d", s)
	}
}
