// Package virtio implements virtio 1.2 devices for godwit: the split
// virtqueue (virtio 1.2 §2.7) over bounds-checked guest memory and the
// modern virtio-pci transport (§4.1, VIRTIO_F_VERSION_1 only). Device
// backends (rng/, blk/, net/) implement Device; the Transport
// owns everything common to all of them: feature negotiation, device
// status, queue configuration and queue state, interrupts (MSI-X with an
// INTx fallback), notifications, a worker goroutine per device, pause and
// resume, and the saved state of all of that.
//
// Nothing from the guest is trusted. Descriptor chains are decoded with
// encoding/binary from memory.Slice (never by laying structs over RAM),
// every index, address and length is checked, and a queue the driver
// breaks (a descriptor loop, an index out of range, a chain longer than
// the queue, a buffer outside RAM, a bad indirect table) stops; the
// device then sets DEVICE_NEEDS_RESET (§2.1.2) and the VMM carries on.
// The device never writes driver-owned memory (descriptors, the available
// ring) and every write it makes to guest memory goes through
// memory.WritableSlice or memory.Write, which mark the VMM dirty bitmap.
package virtio
