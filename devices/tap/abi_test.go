package tap

import (
	"testing"

	"gvisor.dev/gvisor/pkg/abi/linux"
)

// The expected values are the output of testdata/tunabi.c, compiled with
// gcc against the installed kernel headers (linux/if_tun.h, net/if.h,
// linux/virtio_net.h):
//
//	gcc -o /tmp/tunabi testdata/tunabi.c && /tmp/tunabi
func TestABI(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want uint32
	}{
		{"TUNSETIFF", linux.TUNSETIFF, 0x400454ca},
		{"TUNGETIFF", linux.TUNGETIFF, 0x800454d2},
		{"TUNSETOFFLOAD", tunSetOffload, 0x400454d0},
		{"TUNSETVNETHDRSZ", tunSetVnetHdrSz, 0x400454d8},
		{"TUNGETVNETHDRSZ", tunGetVnetHdrSz, 0x800454d7},
		{"IFF_TAP", linux.IFF_TAP, 0x00000002},
		{"IFF_NO_PI", linux.IFF_NO_PI, 0x00001000},
		{"IFF_VNET_HDR", iffVnetHdr, 0x00004000},
		{"IFF_PERSIST", iffPersist, 0x00000800},
		{"TUN_F_CSUM", OffloadCsum, 0x00000001},
		{"TUN_F_TSO4", OffloadTSO4, 0x00000002},
		{"TUN_F_TSO6", OffloadTSO6, 0x00000004},
		{"TUN_F_TSO_ECN", OffloadTSOECN, 0x00000008},
		{"TUN_F_UFO", OffloadUFO, 0x00000010},
		{"sizeof(struct ifreq)", ifreqSize, 40},
		{"sizeof(struct virtio_net_hdr_v1)", VnetHdrSize, 12},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}
