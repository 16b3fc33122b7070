package net

// Constants of the virtio network device, virtio 1.2 §5.1, with the names
// of include/uapi/linux/virtio_net.h.

// Feature bits (§5.1.3). The device offers the ones without "(not
// offered)".
const (
	FeatureCsum          = 1 << 0  // VIRTIO_NET_F_CSUM: the driver may send partial checksums
	FeatureGuestCsum     = 1 << 1  // VIRTIO_NET_F_GUEST_CSUM: the driver takes partial checksums
	FeatureMTU           = 1 << 3  // VIRTIO_NET_F_MTU (not offered)
	FeatureMAC           = 1 << 5  // VIRTIO_NET_F_MAC
	FeatureGuestTSO4     = 1 << 7  // VIRTIO_NET_F_GUEST_TSO4: the driver takes TCPv4 GSO frames
	FeatureGuestTSO6     = 1 << 8  // VIRTIO_NET_F_GUEST_TSO6: the driver takes TCPv6 GSO frames
	FeatureGuestECN      = 1 << 9  // VIRTIO_NET_F_GUEST_ECN: ... with the ECN (CWR) bit
	FeatureHostTSO4      = 1 << 11 // VIRTIO_NET_F_HOST_TSO4: the driver may send TCPv4 GSO frames
	FeatureHostTSO6      = 1 << 12 // VIRTIO_NET_F_HOST_TSO6: the driver may send TCPv6 GSO frames
	FeatureHostECN       = 1 << 13 // VIRTIO_NET_F_HOST_ECN: ... with the ECN (CWR) bit
	FeatureMrgRxbuf      = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
	FeatureStatus        = 1 << 16 // VIRTIO_NET_F_STATUS
	FeatureCtrlVQ        = 1 << 17 // VIRTIO_NET_F_CTRL_VQ
	FeatureCtrlRx        = 1 << 18 // VIRTIO_NET_F_CTRL_RX (not offered)
	FeatureGuestAnnounce = 1 << 21 // VIRTIO_NET_F_GUEST_ANNOUNCE
	FeatureMQ            = 1 << 22 // VIRTIO_NET_F_MQ (not offered)
)

// offeredFeatures are the device-specific features the device offers.
// The TCP segmentation offloads cost nothing here: GSO frames cross the
// tap (TUNSETOFFLOAD) with their header unchanged, and the host kernel
// segments or coalesces them, so a 64 KiB TCP segment is one descriptor
// chain and one tap write instead of some forty.
const offeredFeatures = FeatureCsum | FeatureGuestCsum | FeatureMAC | FeatureMrgRxbuf |
	FeatureStatus | FeatureCtrlVQ | FeatureGuestAnnounce |
	FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN |
	FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN

// Status bits of the configuration's status field (§5.1.4).
const (
	StatusLinkUp   = 1 // VIRTIO_NET_S_LINK_UP
	StatusAnnounce = 2 // VIRTIO_NET_S_ANNOUNCE
)

// Offsets in struct virtio_net_config (§5.1.4). The device fills mac,
// status and max_virtqueue_pairs; mtu, speed, duplex and the RSS fields
// belong to features it does not offer and read as zero.
const (
	cfgMAC        = 0  // u8 mac[6]
	cfgStatus     = 6  // le16 status
	cfgMaxVQPairs = 8  // le16 max_virtqueue_pairs
	cfgMTU        = 10 // le16 mtu
	// le32 speed, u8 duplex, u8 rss_max_key_size, le16
	// rss_max_indirection_table_length, le32 supported_hash_types.
	configSize = 24
)

// Virtqueues (§5.1.2): one receive/transmit pair, then the control queue.
const (
	rxQueue   = 0
	txQueue   = 1
	ctrlQueue = 2
	numQueues = 3
)

// struct virtio_net_hdr_v1 (§5.1.6): the header before every packet in
// both directions, 12 bytes for a VIRTIO_F_VERSION_1 device.
const (
	hdrSize          = 12
	hdrFlags         = 0    // u8 flags
	hdrGSOType       = 1    // u8 gso_type
	hdrHdrLen        = 2    // le16 hdr_len
	hdrGSOSize       = 4    // le16 gso_size
	hdrCsumStart     = 6    // le16 csum_start
	hdrCsumOffset    = 8    // le16 csum_offset
	hdrNumBuffers    = 10   // le16 num_buffers
	hdrFNeedsCsum    = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM
	hdrFDataValid    = 2    // VIRTIO_NET_HDR_F_DATA_VALID
	hdrGSONone       = 0    // VIRTIO_NET_HDR_GSO_NONE
	hdrGSOTCPv4      = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	hdrGSOTCPv6      = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	hdrGSOECN        = 0x80 // VIRTIO_NET_HDR_GSO_ECN, or'ed into a TCP type
	ethHeaderSize    = 14   // destination, source, EtherType
	maxEthernetFrame = 65535 + 18
	// maxPacket is the largest header plus frame the device moves: the
	// largest MTU Linux allows a tap or a virtio-net interface without
	// VIRTIO_NET_F_MTU (ETH_MAX_MTU) plus an Ethernet header with a VLAN
	// tag. A GSO frame is an IP packet of at most 64 KiB plus the
	// Ethernet header, so nothing is larger.
	maxPacket = hdrSize + maxEthernetFrame
)

// The control queue (§5.1.6.5): struct virtio_net_ctrl is a class and a
// command byte, command-specific data, and an ack byte the device writes.
const (
	ctrlClassAnnounce = 3 // VIRTIO_NET_CTRL_ANNOUNCE
	ctrlAnnounceAck   = 0 // VIRTIO_NET_CTRL_ANNOUNCE_ACK
	ctrlOK            = 0 // VIRTIO_NET_OK
	ctrlErr           = 1 // VIRTIO_NET_ERR
)

// pciClassEthernet is the PCI class code of an Ethernet controller.
const pciClassEthernet = 0x020000
