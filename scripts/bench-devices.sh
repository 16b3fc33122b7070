#!/usr/bin/env bash
# Device I/O benchmark: guest throughput of virtio-blk (a raw image) and
# virtio-net (a tap), godwit vs Debian's QEMU with KVM (-cpu host, the same
# memory, vCPUs and virtio-pci devices), alternating (the one that goes
# first swaps every rep), REPS times each, in the same nested host (or
# directly with a hardware /dev/kvm, as root).
# Each run boots Debian's stock kernel + the busybox initramfs; the
# guest's godwit.cmd (which the initramfs's /init reads from /proc/cmdline,
# so QEMU's -append gives its guest the same command) measures:
#   disk_write, disk_read  DISK_MIB written to /dev/vda with dd bs=1M
#                          oflag=direct, then read back with iflag=direct
#                          (buffered I/O + fsync + drop_caches when the
#                          device refuses O_DIRECT); timed with the guest's
#                          /proc/uptime.
#   net_host_to_guest,     NET_MIB of zeros over TCP each way between the
#   net_guest_to_host      host's bridge (link-local address, the tap on
#                          it) and the guest's eth0: busybox nc connects,
#                          dd moves the data (nc -e); timed on the host from
#                          connect until the receiving end has it all.
# Prints each run and the ratio of medians per metric (godwit / QEMU, in
# MB/s: above 1 means godwit is faster). Both VMMs do their device I/O in
# userspace (QEMU without vhost); the guest prints the virtio feature bits
# each device negotiated (BENCH-INFO lines), which explain most gaps.
#
#   REPS=2 scripts/bench-devices.sh
#   DISK_MIB=32 NET_MIB=16 REPS=3 scripts/bench-devices.sh
#   scripts/bench-devices.sh | tee bench.txt; BENCH_SUMMARY_ONLY=bench.txt scripts/bench-devices.sh
#   BENCH_PROFILE=1 REPS=1 scripts/bench-devices.sh   # also a CPU profile of
#       each godwit run (GODWIT_CPUPROFILE), saved as $BIN_DIR/bench-devices-REP.pprof
#       and summarised with go tool pprof -top
set -euo pipefail
# BENCH_SUMMARY_ONLY=FILE: only summarise the saved output of a run.
summary_only=${BENCH_SUMMARY_ONLY:-}
BENCH_PROFILE=${BENCH_PROFILE:-0}
[ -z "$summary_only" ] || summary_only=$(cd "$(dirname "$summary_only")" && pwd)/$(basename "$summary_only")
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
REPS=${REPS:-2}
DISK_MIB=${DISK_MIB:-64}
# Under the nested host's TCG a userspace virtio-net moves a few MB/s:
# 32 MiB keeps a run under a minute or so.
NET_MIB=${NET_MIB:-32}
CMDLINE=${CMDLINE:-console=ttyS0 reboot=k panic=-1 quiet}
# VM_TIMEOUT bounds one VM run (boot + measurements), in seconds.
VM_TIMEOUT=${VM_TIMEOUT:-600}
# NET_TIMEOUT bounds one TCP transfer, in seconds; a transfer that hits it
# has stalled (it takes seconds), and godwit's device state is printed.
NET_TIMEOUT=${NET_TIMEOUT:-120}

# summary FILE: medians per VMM and metric of the BENCH-IO lines in FILE,
# and the godwit/QEMU ratios; fails when a metric lacks a side.
summary() {
	python3 - "$1" <<'PY'
import re, statistics, sys
METRICS = [
    ("disk_write", "disk write, dd bs=1M O_DIRECT"),
    ("disk_read", "disk read, dd bs=1M O_DIRECT"),
    ("net_guest_to_host", "TCP guest -> host, nc"),
    ("net_host_to_guest", "TCP host -> guest, nc"),
]
VMMS = ("godwit", "qemu")
RESULT = re.compile(r"BENCH-IO (\w+) (\d+) (\w+) ok=(\d) bytes=(\d+) secs=(-?[0-9.]+)")
runs = {(v, m): [] for v in VMMS for m, _ in METRICS}
failed, coarse = [], False
for line in open(sys.argv[1], errors="replace"):
    r = RESULT.search(line)
    if not r or (r.group(1), r.group(3)) not in runs:
        continue
    vmm, rep, metric, ok, n, s = r.group(1), r.group(2), r.group(3), r.group(4), int(r.group(5)), float(r.group(6))
    if ok != "1":
        failed.append("%s run %s %s: incomplete transfer or error (%.2fs)" % (vmm, rep, metric, s))
        continue
    if s <= 0:
        failed.append("%s run %s %s: too fast for the 10 ms clock" % (vmm, rep, metric))
        continue
    coarse |= s < 0.5
    runs[(vmm, metric)].append(n / 1e6 / s)
print("\nguest I/O throughput, MB/s (10^6 bytes/s), median over the runs (runs counted):")
print("  %-34s %14s %14s %12s" % ("", "godwit", "QEMU/KVM", "godwit/QEMU"))
missing = False
for metric, label in METRICS:
    g, q = runs[("godwit", metric)], runs[("qemu", metric)]
    cell = lambda xs: "%9.1f (%d)" % (statistics.median(xs), len(xs)) if xs else "%14s" % "-"
    ratio = "%12.2f" % (statistics.median(g) / statistics.median(q)) if g and q else "%12s" % "-"
    missing |= not (g and q)
    print("  %-34s %14s %14s %s" % (label, cell(g), cell(q), ratio))
print("  (ratio above 1: godwit faster)")
for f in failed:
    print("failed: " + f)
if coarse:
    print("note: some transfers took under 0.5 s; the clocks tick every 10 ms: raise DISK_MIB/NET_MIB")
if missing:
    sys.exit("bench-devices: a metric has no successful run for one of the VMMs")
PY
}

if [ -n "$summary_only" ]; then
	summary "$summary_only"
	exit
fi

build_harness
go build -o "$BIN_DIR/godwit" ./cmd/godwit

# The payload runs inside the nested host (busybox sh) or here (sh), as
# root. It needs GODWIT_KERNEL, GODWIT_INITRD, REPS, DISK_MIB, NET_MIB,
# CMDLINE, VM_TIMEOUT and NET_TIMEOUT; GODWIT and QEMU name the VMM binaries.
payload=$(cat <<'PAYLOAD'
set -u
GODWIT=${GODWIT:-/bin/godwit}
QEMU=${QEMU:-qemu-system-x86_64}
BR=gwbbr0 TAP=gwbtap0
HOST_IP=169.254.20.1 GUEST_IP=169.254.20.2
# One MAC for both VMMs: the host's ARP entry for the guest stays right.
MAC=52:54:00:20:00:02
PORT_H2G=5001 PORT_G2H=5002
WORK=${TMPDIR:-/tmp}/godwit-bench-devices.$$
IMG=$WORK/disk.img
BLOCKS=$((NET_MIB * 16)) # 64 KiB blocks
CR=$(printf '\r')

command -v ip >/dev/null || ip() { busybox ip "$@"; }
now() { cut -d' ' -f1 /proc/uptime; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", n / 1e6 / s; else print "inf" }'; }
# result VMM REP METRIC OK BYTES SECS: one result line (parsed at the end).
result() { echo "BENCH-IO $1 $2 $3 ok=$4 bytes=$5 secs=$6 MBps=$(mbps "$5" "$6")"; }

net_down() {
	ip link del "$TAP" 2>/dev/null || busybox tunctl -d "$TAP" >/dev/null 2>&1
	ip link set "$BR" down 2>/dev/null
	ip link del "$BR" 2>/dev/null || busybox brctl delbr "$BR" 2>/dev/null
	return 0
}
cleanup() { net_down; rm -rf "$WORK"; }
# A bridge holding the host's address and a persistent tap on it (as in
# test/integration/net_test.go): iproute2 where it is, busybox otherwise.
net_up() {
	net_down
	{ ip link add name "$BR" type bridge 2>/dev/null || busybox brctl addbr "$BR"; } &&
	{ ip tuntap add dev "$TAP" mode tap 2>/dev/null || busybox tunctl -t "$TAP" >/dev/null; } || return 1
	for i in "$BR" "$TAP"; do
		echo 1 >"/proc/sys/net/ipv6/conf/$i/disable_ipv6" 2>/dev/null
	done
	{ ip link set "$TAP" master "$BR" 2>/dev/null || busybox brctl addif "$BR" "$TAP"; } &&
	ip link set "$TAP" up && ip link set "$BR" up && ip addr add "$HOST_IP/24" dev "$BR"
}

# The guest's command (godwit.cmd="...": no double quotes). Listeners for
# both TCP tests first, then the disk test, then READY: the host connects.
# On both ends nc only makes the connection and -e runs dd on it (busybox
# nc itself copies 1 KiB at a time, which would cap the rate): the
# guest's receiver reads exactly BLOCKS blocks, prints its record count
# and closes; its sender writes BLOCKS blocks and closes.
guest_cmd() {
	printf '%s' "t(){ cut -d' ' -f1 /proc/uptime; };" \
		" ip link set eth0 up; ip addr add $GUEST_IP/24 dev eth0;" \
		" nc -l -p $PORT_H2G -e sh -c 'dd of=/dev/null bs=65536 count=$BLOCKS iflag=fullblock 2>&1 | sed s/^/BENCH-G-RX:/ >&2' &" \
		" nc -l -p $PORT_G2H -e dd if=/dev/zero bs=65536 count=$BLOCKS 2>/dev/null &" \
		" echo BENCH-G-INFO blk=\$(cat /sys/block/vda/device/features) blk_queues=\$(ls /sys/block/vda/mq | wc -l)" \
		" net=\$(cat /sys/class/net/eth0/device/features);" \
		" o=oflag=direct; i=iflag=direct;" \
		" dd if=/dev/zero of=/dev/vda bs=1M count=1 \$o 2>/dev/null || { o=conv=fsync; i=; echo BENCH-G-NODIRECT; };" \
		" a=\$(t); dd if=/dev/zero of=/dev/vda bs=1M count=$DISK_MIB \$o 2>/dev/null; r=\$?; echo BENCH-G disk_write \$r \$a \$(t);" \
		" sync; echo 3 >/proc/sys/vm/drop_caches;" \
		" a=\$(t); dd if=/dev/vda of=/dev/null bs=1M count=$DISK_MIB \$i 2>/dev/null; r=\$?; echo BENCH-G disk_read \$r \$a \$(t);" \
		" echo BENCH-G-NET-READY; wait; echo BENCH-G-NET-DONE"
}

# KVM's own counters (debugfs; summed over the VMs alive, and one runs at
# a time) around each test, to compare how the two VMMs make the guest
# exit: BENCH-KVM VMM REP METRIC name=delta ... (exits, I/O and MMIO
# exits, halts, interrupt injections...).
KVMDBG=/sys/kernel/debug/kvm
[ -d "$KVMDBG" ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
kvm_snap() {
	for f in exits io_exits mmio_exits irq_exits halt_exits halt_wakeup irq_injections signal_exits request_irq_exits irq_window_exits insn_emulation; do
		[ -r "$KVMDBG/$f" ] && printf '%s=%s ' "$f" "$(cat "$KVMDBG/$f")"
	done
	# The host's own interrupts of the kinds that take a CPU out of a
	# guest, summed over its CPUs: local timer, rescheduling IPIs,
	# function-call IPIs, TLB shootdowns.
	awk -v n="$(nproc)" '$1 ~ /^(LOC|RES|CAL|TLB):$/ {
		s = 0; for (i = 2; i <= n + 1; i++) s += $i
		printf "host_%s=%d ", substr($1, 1, 3), s }' /proc/interrupts 2>/dev/null
}
# kvm_delta VMM REP METRIC BEFORE AFTER: print the counters' growth.
kvm_delta() {
	[ -n "$4" ] && [ -n "$5" ] || return 0
	awk -v head="BENCH-KVM $1 $2 $3" -v a="$4" -v b="$5" 'BEGIN {
		n = split(a, x, " "); for (i = 1; i <= n; i++) { split(x[i], kv, "="); before[kv[1]] = kv[2] }
		line = head; n = split(b, y, " ")
		for (i = 1; i <= n; i++) { split(y[i], kv, "="); line = line " " kv[1] "=" kv[2] - before[kv[1]] }
		print line }' </dev/null
}

# net_tests VMM REP: host->guest, then guest->host, each timed here from
# connect to the end of the transfer. Host->guest: the host sends zeros
# without end; the guest closes once it has read BLOCKS blocks, and the
# host's next write fails (connection reset): that ends the timing. Its
# result waits for the guest's record count (BENCH-G-RX), read later from
# the console. Guest->host: the host reads until the guest closes.
net_tests() {
	k0=$(kvm_snap)
	kvm_delta "$1" "$2" disk "$disk_k0" "$k0"
	a=$(now)
	timeout "$NET_TIMEOUT" busybox nc "$GUEST_IP" "$PORT_H2G" \
		-e busybox dd if=/dev/zero bs=65536 >/dev/null 2>&1
	[ "$?" != 124 ] || stalled "$1" host_to_guest
	h2g_secs=$(secs "$a" "$(now)")
	k1=$(kvm_snap)
	kvm_delta "$1" "$2" net_host_to_guest "$k0" "$k1"
	a=$(now)
	timeout "$NET_TIMEOUT" busybox nc "$GUEST_IP" "$PORT_G2H" \
		-e busybox dd of=/dev/null bs=65536 iflag=fullblock 2>"$WORK/g2h"
	rc=$?
	b=$(now)
	got=$(sed -n 's/^\([0-9+]*\) records in.*/\1/p' "$WORK/g2h")
	ok=0
	[ "$got" = "$BLOCKS+0" ] && ok=1
	[ "$rc" != 124 ] || stalled "$1" "guest_to_host (records in: ${got:-none})"
	result "$1" "$2" net_guest_to_host "$ok" $((BLOCKS * 65536)) "$(secs "$a" "$b")"
	kvm_delta "$1" "$2" net_guest_to_host "$k1" "$(kvm_snap)"
}

# stalled VMM WHAT: a transfer hit NET_TIMEOUT; for godwit, print the
# devices' queue and counter snapshot from its API, for the diagnosis.
stalled() {
	echo "BENCH-STALL $1 $2 after ${NET_TIMEOUT}s"
	[ "$1" = godwit ] || return 0
	"$GODWIT" ctl --api-sock "$WORK/api.sock" status --json 2>&1 | sed "s/^/  godwit-status| /"
}

# disk_result VMM REP METRIC RC T0 T1: a disk line of the guest.
disk_result() {
	ok=0
	[ "$4" = 0 ] && ok=1
	result "$1" "$2" "$3" "$ok" $((DISK_MIB * 1048576)) "$(secs "$5" "$6")"
}

# read_console VMM REP: read the guest's console, run the host side when
# the guest is ready, print the results.
read_console() {
	h2g_secs=0 h2g=none disk_k0=
	while IFS= read -r line; do
		line=${line%"$CR"}
		case $line in
		*BENCH-G-INFO*)
			echo "BENCH-INFO $1 $2 ${line#*BENCH-G-INFO }"
			disk_k0=$(kvm_snap)
			;;
		*BENCH-G-NODIRECT*) echo "BENCH-INFO $1 $2 O_DIRECT refused: buffered dd, fsync, drop_caches" ;;
		*"BENCH-G disk_"*)
			# shellcheck disable=SC2086 # split "METRIC RC T0 T1"
			disk_result "$1" "$2" ${line#*BENCH-G }
			;;
		*BENCH-G-NET-READY*)
			net_tests "$1" "$2" </dev/null
			h2g=pending
			;;
		*"BENCH-G-RX:"*"records in"*)
			got=${line#*BENCH-G-RX:}
			got=${got%% *}
			ok=0
			[ "$got" = "$BLOCKS+0" ] && ok=1
			result "$1" "$2" net_host_to_guest "$ok" $((BLOCKS * 65536)) "$h2g_secs"
			h2g=reported
			;;
		*BENCH-G-RX:*) ;;
		*) echo "  $1| $line" ;;
		esac
	done
	# The guest never reported what it received.
	[ "$h2g" != pending ] || result "$1" "$2" net_host_to_guest 0 $((BLOCKS * 65536)) "$h2g_secs"
}

# run_vm VMM REP COMMAND...: one VM on a fresh sparse image.
run_vm() {
	name=$1 rep=$2
	shift 2
	rm -f "$IMG"
	dd if=/dev/zero of="$IMG" bs=1048576 count=0 seek=$((DISK_MIB + 1)) 2>/dev/null
	echo "BENCH-RUN $name $rep start"
	start=$(now)
	{
		timeout "$VM_TIMEOUT" "$@" </dev/null 2>"$WORK/stderr"
		echo $? >"$WORK/rc"
	} | read_console "$name" "$rep"
	rc=$(cat "$WORK/rc")
	echo "BENCH-RUN $name $rep exit=$rc wall_s=$(secs "$start" "$(now)")"
	if [ "$rc" != 0 ]; then
		tail -n 20 "$WORK/stderr" | sed "s/^/  $name stderr| /"
	fi
	# The CPU profile (BENCH_PROFILE=1) goes out through the console.
	for p in "$WORK"/prof.*; do
		[ -f "$p" ] || continue
		echo "BENCH-PROFILE-BEGIN $name $rep"
		base64 "$p" 2>/dev/null || busybox base64 "$p"
		echo "BENCH-PROFILE-END"
		rm -f "$p"
	done
}

[ "$(id -u)" = 0 ] || { echo "bench-devices: needs root (taps, bridge)"; exit 1; }
mkdir -p "$WORK"
trap cleanup EXIT
net_up || { echo "bench-devices: cannot set up $BR/$TAP"; exit 1; }
GCMD="$CMDLINE godwit.cmd=\"$(guest_cmd)\""
echo "BENCH-CONFIG disk_mib=$DISK_MIB net_mib=$NET_MIB reps=$REPS cmdline_bytes=${#GCMD}"
# run_godwit REP and run_qemu REP: one VM of each, booting the same
# kernel with the same devices.
run_godwit() {
	profile=
	[ "${BENCH_PROFILE:-0}" = 1 ] && profile=GODWIT_CPUPROFILE=$WORK/prof
	run_vm godwit "$1" env $profile "$GODWIT" run --kernel "$GODWIT_KERNEL" --initrd "$GODWIT_INITRD" \
		--mem 256M --cpus 2 --serial stdio --cmdline "$GCMD" --api-sock "$WORK/api.sock" \
		--disk "path=$IMG" --net "tap=$TAP,mac=$MAC"
}
run_qemu() {
	run_vm qemu "$1" "$QEMU" -enable-kvm -cpu host -smp 2 -m 256 -nographic -nic none -no-reboot \
		-kernel "$GODWIT_KERNEL" -initrd "$GODWIT_INITRD" -append "$GCMD" \
		-drive "file=$IMG,format=raw,if=none,id=d0" -device virtio-blk-pci,drive=d0 \
		-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=n0,mac=$MAC,romfile="
}

# The two VMMs swap places every rep: in three runs of two godwit builds
# against each other (5 reps, the same order every rep), the second slot
# was 7-52 % faster in two runs and 0-11 % slower in the third; with
# noise that size, a fixed order biases the ratios one way or the other.
i=1
while [ "$i" -le "$REPS" ]; do
	if [ $((i % 2)) = 1 ]; then
		run_godwit "$i"
		run_qemu "$i"
	else
		run_qemu "$i"
		run_godwit "$i"
	fi
	i=$((i + 1))
done
PAYLOAD
)

out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
if use_direct_kvm && command -v qemu-system-x86_64 >/dev/null; then
	eval "$("$BIN_DIR/nested" --print-env)"
	export GODWIT_KERNEL GODWIT_INITRD REPS DISK_MIB NET_MIB CMDLINE VM_TIMEOUT NET_TIMEOUT BENCH_PROFILE
	GODWIT="$ABS_BIN/godwit" sh -c "$payload" | tee "$out" || status=$?
else
	# A run is about a minute of boot plus the transfers under TCG.
	"$BIN_DIR/nested" --with-qemu --silence 5m --timeout "$((10 + REPS * 8))m" --add "$BIN_DIR/godwit:/bin/godwit" \
		--env "REPS=$REPS" --env "DISK_MIB=$DISK_MIB" --env "NET_MIB=$NET_MIB" \
		--env "CMDLINE=$CMDLINE" --env "VM_TIMEOUT=$VM_TIMEOUT" --env "NET_TIMEOUT=$NET_TIMEOUT" \
		--env "BENCH_PROFILE=$BENCH_PROFILE" \
		--run "$payload" | tee "$out" || status=$?
fi
if [[ $BENCH_PROFILE == 1 ]]; then
	step "godwit CPU profiles"
	# BENCH-PROFILE-BEGIN NAME REP, base64 lines, BENCH-PROFILE-END.
	tr -d '\r' <"$out" | awk -v dir="$BIN_DIR" '
		/^BENCH-PROFILE-BEGIN / { f = dir "/bench-devices-" $3 ".b64"; printf "" > f; next }
		/^BENCH-PROFILE-END/ { close(f); f = ""; next }
		f != "" { print >> f }'
	for b in "$BIN_DIR"/bench-devices-*.b64; do
		[[ -f $b ]] || continue
		pprof=${b%.b64}.pprof
		base64 -d "$b" >"$pprof" && rm -f "$b"
		echo "$pprof:"
		go tool pprof -top -nodecount=40 "$BIN_DIR/godwit" "$pprof" 2>/dev/null | sed 's/^/  /' || warn "cannot read $pprof"
	done
fi
step "device I/O benchmark results"
summary "$out" || status=1
exit "$status"
