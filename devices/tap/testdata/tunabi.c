// tunabi prints the kernel's tun/tap ioctl numbers, flags and struct sizes
// as Go table rows; abi_test.go hard-codes its output.
// Regenerate: gcc -o /tmp/tunabi testdata/tunabi.c && /tmp/tunabi
#include <stdio.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#define N(x) printf("\t{\"%s\", 0x%08x},\n", #x, (unsigned)(x));
#define S(t) printf("\t{\"%s\", %zu},\n", #t, sizeof(struct t));
int main(void) {
	N(TUNSETIFF) N(TUNGETIFF) N(TUNSETOFFLOAD) N(TUNSETVNETHDRSZ) N(TUNGETVNETHDRSZ)
	N(IFF_TAP) N(IFF_NO_PI) N(IFF_VNET_HDR) N(IFF_PERSIST)
	N(TUN_F_CSUM) N(TUN_F_TSO4) N(TUN_F_TSO6) N(TUN_F_TSO_ECN) N(TUN_F_UFO)
	S(ifreq) S(virtio_net_hdr_v1)
	return 0;
}
