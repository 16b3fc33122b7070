package blk

import (
	"os"
	"testing"

	"godwit/devices/virtio/virtiotest"
)

// BenchmarkSequentialRead reads an image file sequentially through the
// whole device path without KVM: the test driver posts a request
// (header, one data buffer, status), notifies the queue through the BAR,
// the worker pops the chain, preads into guest memory, pushes the used
// entry and sends the MSI-X message the driver waits for.
func BenchmarkSequentialRead(b *testing.B) {
	const imageSize = 32 << 20
	for _, bs := range []struct {
		name string
		size uint32
	}{{"4KiB", 4 << 10}, {"64KiB", 64 << 10}} {
		b.Run(bs.name, func(b *testing.B) {
			path := tempImage(b, b.TempDir(), imageSize)
			// Real data, so the page cache holds pages, not holes.
			if err := os.WriteFile(path, pattern(imageSize, 3), 0o644); err != nil {
				b.Fatal(err)
			}
			disk, err := Open(path, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { disk.Close() })
			r := newRigFor(b, disk, nil, ^uint64(0))
			hdr := r.d.Alloc(16, 8)
			data := r.d.Alloc(uint64(bs.size), 4096)
			st := r.d.Alloc(1, 1)
			sectors := uint64(bs.size / SectorSize)
			b.SetBytes(int64(bs.size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sector := uint64(i) * sectors % (imageSize / SectorSize)
				copy(r.d.Mem(hdr, 16), header(TypeIn, sector))
				head := uint16(i*3) % r.q.Size
				r.q.SetDesc(head, hdr, 16, virtiotest.DescNext, (head+1)%r.q.Size)
				r.q.SetDesc((head+1)%r.q.Size, data, bs.size, virtiotest.DescWrite|virtiotest.DescNext, (head+2)%r.q.Size)
				r.q.SetDesc((head+2)%r.q.Size, st, 1, virtiotest.DescWrite, 0)
				r.q.Publish(head)
				r.q.Kick()
				r.d.WaitMSI(1)
				if used := r.q.TakeUsed(); len(used) != 1 || used[0].Len != bs.size+1 {
					b.Fatalf("used %+v", used)
				}
			}
			b.StopTimer()
			if s := r.d.Mem(st, 1)[0]; s != StatusOK {
				b.Fatalf("status %d", s)
			}
		})
	}
}
