package memory

import "unsafe"

// RegionHostAddr returns the host virtual address of region i's mapping, as
// KVM_SET_USER_MEMORY_REGION needs it.
func (m *Memory) RegionHostAddr(i int) uintptr {
	return uintptr(unsafe.Pointer(&m.RegionHost(i)[0]))
}
