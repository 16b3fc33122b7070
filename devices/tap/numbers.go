package tap

import "gvisor.dev/gvisor/pkg/abi/linux"

// The tun ioctls gVisor's abi/linux does not define (it has TUNSETIFF and
// TUNGETIFF), built like the kernel's _IOR/_IOW in linux/if_tun.h from
// the size of the argument type the header names. abi_test.go checks them
// against the installed kernel headers.
var (
	tunSetOffload   = linux.IOW('T', 208, sizeOf[uint32]()) // TUNSETOFFLOAD, unsigned int (passed by value)
	tunGetVnetHdrSz = linux.IOR('T', 215, sizeOf[int32]())  // TUNGETVNETHDRSZ, int *
	tunSetVnetHdrSz = linux.IOW('T', 216, sizeOf[int32]())  // TUNSETVNETHDRSZ, int *
)
