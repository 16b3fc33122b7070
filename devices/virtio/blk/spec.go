package blk

// Constants of the virtio block device, virtio 1.2 §5.2, with the names of
// include/uapi/linux/virtio_blk.h.

// SectorSize is the unit of capacity and of the request sector field
// (§5.2.4: always 512 bytes, whatever blk_size says).
const SectorSize = 512

// Feature bits (§5.2.3).
const (
	FeatureSizeMax     = 1 << 1  // VIRTIO_BLK_F_SIZE_MAX (not offered)
	FeatureSegMax      = 1 << 2  // VIRTIO_BLK_F_SEG_MAX
	FeatureGeometry    = 1 << 4  // VIRTIO_BLK_F_GEOMETRY (not offered)
	FeatureRO          = 1 << 5  // VIRTIO_BLK_F_RO
	FeatureBlkSize     = 1 << 6  // VIRTIO_BLK_F_BLK_SIZE
	FeatureFlush       = 1 << 9  // VIRTIO_BLK_F_FLUSH
	FeatureTopology    = 1 << 10 // VIRTIO_BLK_F_TOPOLOGY (not offered)
	FeatureConfigWCE   = 1 << 11 // VIRTIO_BLK_F_CONFIG_WCE (not offered)
	FeatureMQ          = 1 << 12 // VIRTIO_BLK_F_MQ (not offered)
	FeatureDiscard     = 1 << 13 // VIRTIO_BLK_F_DISCARD (not offered)
	FeatureWriteZeroes = 1 << 14 // VIRTIO_BLK_F_WRITE_ZEROES (not offered)
)

// Request types (§5.2.6, struct virtio_blk_req.type).
const (
	TypeIn          = 0  // VIRTIO_BLK_T_IN: read
	TypeOut         = 1  // VIRTIO_BLK_T_OUT: write
	TypeFlush       = 4  // VIRTIO_BLK_T_FLUSH
	TypeGetID       = 8  // VIRTIO_BLK_T_GET_ID
	TypeGetLifetime = 10 // VIRTIO_BLK_T_GET_LIFETIME (unsupported)
	TypeDiscard     = 11 // VIRTIO_BLK_T_DISCARD (unsupported)
	TypeWriteZeroes = 13 // VIRTIO_BLK_T_WRITE_ZEROES (unsupported)
	TypeSecureErase = 14 // VIRTIO_BLK_T_SECURE_ERASE (unsupported)
)

// Request status values (§5.2.6, the last byte of a request).
const (
	StatusOK     = 0 // VIRTIO_BLK_S_OK
	StatusIOErr  = 1 // VIRTIO_BLK_S_IOERR
	StatusUnsupp = 2 // VIRTIO_BLK_S_UNSUPP
)

// IDBytes is the length of the GET_ID answer (VIRTIO_BLK_ID_BYTES): the
// serial string, NUL-padded when shorter.
const IDBytes = 20

// headerSize is the device-readable header of every request: struct
// virtio_blk_req's le32 type, le32 reserved, le64 sector (§5.2.6).
const headerSize = 16

// Offsets in struct virtio_blk_config (§5.2.4). This device fills
// capacity, seg_max and blk_size; the other fields belong to features it
// does not offer and read as zero.
const (
	cfgCapacity = 0  // le64 capacity, in 512-byte sectors
	cfgSizeMax  = 8  // le32 size_max
	cfgSegMax   = 12 // le32 seg_max
	cfgGeometry = 16 // le16 cylinders, u8 heads, u8 sectors
	cfgBlkSize  = 20 // le32 blk_size
	// topology (8 bytes), writeback, unused0, num_queues, then the
	// discard, write zeroes and secure erase limits follow, up to 72
	// bytes in virtio 1.2.
	configSize = 72
)
