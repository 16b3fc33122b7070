#!/usr/bin/env bash
# Boot benchmark: Debian's stock kernel + the busybox initramfs to userspace
# (GODWIT-GUEST-READY) with 2 vCPUs and 256 MiB, godwit vs Debian's QEMU
# with KVM, alternating, REPS times each, in the same nested host (or
# directly with a hardware /dev/kvm). Prints each run and the ratio of
# medians (godwit / QEMU: below 1 means godwit is faster).
#
#   REPS=3 CMDLINE="console=ttyS0 reboot=k panic=-1 quiet" scripts/bench-boot.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
REPS=${REPS:-3}
CMDLINE=${CMDLINE:-console=ttyS0 reboot=k panic=-1 quiet}
build_harness
go build -o "$BIN_DIR/godwit" ./cmd/godwit

payload=$(cat <<'PAYLOAD'
set -u
now() { cut -d" " -f1 /proc/uptime; }
# stamp NAME: time from start to the READY line of the command's output.
stamp() {
	name=$1; start=$2
	while IFS= read -r line; do
		case $line in
		*GODWIT-GUEST-READY*) echo "BENCH $name ready_s=$(awk "BEGIN{print $(now)-$start}")" ;;
		esac
	done
}
i=1
while [ "$i" -le "$REPS" ]; do
	s=$(now)
	/bin/godwit run --kernel "$GODWIT_KERNEL" --initrd "$GODWIT_INITRD" --mem 256M --cpus 2 \
		--cmdline "$CMDLINE" --serial stdio </dev/null 2>/dev/null | stamp godwit "$s"
	s=$(now)
	qemu-system-x86_64 -enable-kvm -cpu host -smp 2 -m 256 -nographic -nic none -no-reboot \
		-kernel "$GODWIT_KERNEL" -initrd "$GODWIT_INITRD" -append "$CMDLINE" </dev/null 2>/dev/null | stamp qemu "$s"
	i=$((i + 1))
done
PAYLOAD
)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if use_direct_kvm && command -v qemu-system-x86_64 >/dev/null; then
	eval "$("$BIN_DIR/nested" --print-env)"
	export GODWIT_KERNEL GODWIT_INITRD REPS CMDLINE
	mkdir -p /tmp/godwit-bench-bin && ln -sf "$PWD/$BIN_DIR/godwit" /tmp/godwit-bench-bin/godwit
	(cd /tmp && bash -c "${payload//\/bin\/godwit//tmp/godwit-bench-bin/godwit}") | tee "$out"
else
	"$BIN_DIR/nested" --with-qemu --silence 5m --add "$BIN_DIR/godwit:/bin/godwit" \
		--env "REPS=$REPS" --env "CMDLINE=$CMDLINE" --run "$payload" | tee "$out"
fi
python3 - "$out" <<'PY'
import re, statistics, sys
runs = {"godwit": [], "qemu": []}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"BENCH (\w+) ready_s=([0-9.]+)", line)
    if m:
        runs[m.group(1)].append(float(m.group(2)))
if not runs["godwit"] or not runs["qemu"]:
    sys.exit("bench-boot: missing results: %r" % runs)
g, q = statistics.median(runs["godwit"]), statistics.median(runs["qemu"])
print("boot to userspace, median of %d: godwit %.2fs, QEMU/KVM %.2fs, ratio godwit/QEMU %.2f" % (len(runs["godwit"]), g, q, g / q))
PY
