#!/usr/bin/env bash
# make nested-qemu-check: boot the nested host with Debian's QEMU inside
# (--with-qemu) and boot the guest kernel + initramfs with -enable-kvm there,
# the baseline a benchmark compares godwit against. Passes when the guest
# prints GODWIT-GUEST-READY.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
build_harness
"$BIN_DIR/nested" --with-qemu ${NESTED_ARGS:-} --run '
start=$(cut -d" " -f1 /proc/uptime)
qemu-system-x86_64 -enable-kvm -cpu host -m 256 -nographic -nic none -no-reboot \
	-kernel "$GODWIT_KERNEL" -initrd "$GODWIT_INITRD" \
	-append "console=ttyS0 reboot=k panic=-1 quiet" </dev/null >/tmp/qemu.log 2>&1
rc=$?
end=$(cut -d" " -f1 /proc/uptime)
cat /tmp/qemu.log
echo "inner qemu exit $rc after $(awk "BEGIN{print $end-$start}")s"
grep -q GODWIT-GUEST-READY /tmp/qemu.log'
