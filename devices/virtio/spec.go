package virtio

// Device status bits (virtio 1.2 §2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 64
	StatusFailed           = 128

	// driverStatusBits are the bits a driver sets; the rest are the
	// device's (DEVICE_NEEDS_RESET) or reserved.
	driverStatusBits = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK | StatusFailed
)

// Reserved feature bits the transport offers (virtio 1.2 §6).
const (
	FeatureIndirectDesc = 1 << 28 // VIRTIO_F_INDIRECT_DESC
	FeatureEventIdx     = 1 << 29 // VIRTIO_F_EVENT_IDX
	FeatureVersion1     = 1 << 32 // VIRTIO_F_VERSION_1

	// DeviceFeatureMask covers the device-type specific feature bits a
	// Device may offer (bits 0-23, §2.2).
	DeviceFeatureMask = 1<<24 - 1
	transportFeatures = FeatureIndirectDesc | FeatureEventIdx | FeatureVersion1
)

// Descriptor flags (§2.7.5).
const (
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4
)

// Split ring layout (§2.7): sizes of one element and of the fixed fields.
const (
	descSize      = 16 // struct virtq_desc: le64 addr, le32 len, le16 flags, le16 next
	usedElemSize  = 8  // struct virtq_used_elem: le32 id, le32 len
	ringHeader    = 4  // le16 flags, le16 idx
	availFNoIntr  = 1  // VIRTQ_AVAIL_F_NO_INTERRUPT
	usedFNoNotify = 1  // VIRTQ_USED_F_NO_NOTIFY
	descAlign     = 16 // §2.7 table "Virtqueue Part Alignment"
	availAlign    = 2
	usedAlign     = 4
	MaxQueueSize  = 32768 // §2.7: split queue size is a power of two ≤ 32768
	noVector      = 0xffff
	maxQueueCount = 64
)

// NoVector is VIRTIO_MSI_NO_VECTOR (§4.1.5.1.2): no MSI-X vector.
const NoVector = noVector

// Virtio PCI capability types (§4.1.4).
const (
	pciCapCommon = 1
	pciCapNotify = 2
	pciCapISR    = 3
	pciCapDevice = 4
)

// ISR status bits (§4.1.4.5).
const (
	isrQueue  = 1
	isrConfig = 2
)

// PCI identity (§4.1.2): vendor 0x1AF4, device 0x1040 + type, revision 1
// for a modern-only device.
const (
	pciVendor       = 0x1af4
	pciDeviceBase   = 0x1040
	pciRevision     = 1
	pciSubsysVendor = 0x1af4
	pciSubsysID     = 0x40
)

// Device types (§5).
const (
	DeviceNet     = 1
	DeviceBlock   = 2
	DeviceConsole = 3
	DeviceEntropy = 4
)
