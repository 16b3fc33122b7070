#!/usr/bin/env bash
# Storage migration benchmark: the embedded test guest (MEM of RAM, no
# kernel) with a raw disk image, migrated over loopback TCP with its disk
# (`godwit migrate --include-storage` to `godwit receive --storage-dir`),
# in the nested host (or directly where /dev/kvm is usable; GODWIT_NESTED=0
# forces that, e.g. on a software KVM). Three parts, every number from
# this one run:
#   sparse      a SPARSE_MIB image holding SPARSE_DATA_MIB of random data
#               in four runs (one at an unaligned offset, one at the end),
#               holes elsewhere: image size, allocated bytes, disk bytes
#               and all bytes on the wire, whether the received image
#               equals the source (cmp) and is sparse (du).
#   throughput  a THRU_MIB image of random data: the disk's rate on the
#               wire in round 0 (the round that sends every allocated
#               block; memory pages share it, so the rate is a lower
#               bound) with --compress lz4 and none, against a raw copy of
#               the same file over loopback TCP into a file (busybox nc,
#               dd on both ends; no fsync, while round 0 ends with one
#               fdatasync of the received image: free on the nested
#               host's tmpfs, not on a disk); ratio of medians over REPS
#               runs each, alternating, after an uncounted warm-up of
#               each copy (goal >= 0.8). The guest runs
#               during round 0 and takes a CPU; so does the same guest
#               during the raw copy (a VM started for it on the same
#               image and stopped after), so that both copies share the
#               host with one running guest.
#   downtime    the sparse image's guest migrated REPS times with
#               --include-storage and REPS times without (the receiver
#               opens the same image: shared storage), alternating; ratio
#               of the median downtimes (goal <= 1.5). Each run's line
#               breaks its downtime down (pause_ms includes flushing the
#               source's image, fdatasync: the fresh images are synced
#               first).
# The goals are printed next to the ratios, never asserted.
#
#   REPS=3 scripts/bench-storage.sh
#   GODWIT_NESTED=0 REPS=5 THRU_MIB=512 scripts/bench-storage.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
REPS=${REPS:-3}
MEM=${MEM:-32M}
# GUEST_ARGS: the test guest's flags (e.g. add "--guest-arg rate=2000" to
# limit its dirty rate, 4 KiB pages per second; unlimited by default).
GUEST_ARGS=${GUEST_ARGS:---guest-arg heartbeat=1}
SPARSE_MIB=${SPARSE_MIB:-1024}
SPARSE_DATA_MIB=${SPARSE_DATA_MIB:-100}
THRU_MIB=${THRU_MIB:-256}
# RAW_PORT is the loopback port of the raw copy.
RAW_PORT=${RAW_PORT:-5399}
# STEP_TIMEOUT bounds every wait (a guest's heartbeat, a receiver), in
# seconds.
STEP_TIMEOUT=${STEP_TIMEOUT:-120}
build_harness
go build -o "$BIN_DIR/godwit" ./cmd/godwit

# The payload runs inside the nested host (busybox sh) or here (sh). It
# needs REPS, MEM, GUEST_ARGS, SPARSE_MIB, SPARSE_DATA_MIB, THRU_MIB, RAW_PORT and
# STEP_TIMEOUT; GODWIT names the godwit binary. It prints a line per
# measurement (BENCH-STORAGE) and the report between STORAGEBENCH-TABLE
# markers.
payload=$(cat <<'PAYLOAD'
set -u
GODWIT=${GODWIT:-/bin/godwit}
WORK=${TMPDIR:-/tmp}/godwit-bench-storage.$$
RAND=$WORK/random.img
SPARSE=$WORK/sparse.img
PIDS=""
FAILED=0

now() { cut -d' ' -f1 /proc/uptime; }
calc() { awk "BEGIN { $1 }" </dev/null; }
# say LINE: print a result line and keep it in $WORK/log for the report.
say() { echo "$*"; echo "$*" >>"$WORK/log"; }
fail() { say "BENCH-STORAGE-FAILED $*"; FAILED=1; }
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	rm -rf "$WORK"
}

# alive PID: the process runs (it exists and is no zombie).
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null; }

# wait_for FILE PATTERN PID: wait until FILE has a line matching PATTERN
# (grep -E), while process PID lives, for at most STEP_TIMEOUT seconds.
wait_for() {
	i=0
	while ! grep -qE "$2" "$1" 2>/dev/null; do
		alive "$3" || { echo "  process $3 exited before '$2' in $1"; return 1; }
		i=$((i + 1))
		[ "$i" -le $((STEP_TIMEOUT * 10)) ] || { echo "  no '$2' in $1 within ${STEP_TIMEOUT}s"; return 1; }
		sleep 0.1
	done
}

# wait_gone PID: wait for a process of ours to exit, for at most
# STEP_TIMEOUT seconds; kill it then. Returns its exit status.
wait_gone() {
	i=0
	while alive "$1"; do
		i=$((i + 1))
		if [ "$i" -gt $((STEP_TIMEOUT * 10)) ]; then
			echo "  process $1 did not exit within ${STEP_TIMEOUT}s: killing it"
			kill "$1" 2>/dev/null
		fi
		sleep 0.1
	done
	wait "$1"
}

# start_vm NAME IMAGE: the test guest with IMAGE as its disk, API socket
# $WORK/NAME.sock; sets VM_PID once its first heartbeat is out.
start_vm() {
	# No earlier run's output may pass for this one's.
	rm -f "$WORK/$1.out" "$WORK/$1.err"
	# shellcheck disable=SC2086 # GUEST_ARGS is a list of flags
	"$GODWIT" run --mem "$MEM" --api-sock "$WORK/$1.sock" $GUEST_ARGS \
		--disk "path=$2" >"$WORK/$1.out" 2>"$WORK/$1.err" &
	VM_PID=$!
	PIDS="$PIDS $VM_PID"
	wait_for "$WORK/$1.out" '^heartbeat ' "$VM_PID" || { tail -n 5 "$WORK/$1.err"; return 1; }
}

# start_receiver NAME FLAGS...: `godwit receive` on a free loopback
# port; sets RECV_PID and RECV_ADDR. (Functions share their variables:
# every one uses names of its own.)
start_receiver() {
	rname=$1
	shift
	rm -f "$WORK/$rname.out" "$WORK/$rname.err"
	"$GODWIT" receive --listen tcp:127.0.0.1:0 --api-sock "$WORK/$rname.sock" "$@" \
		>"$WORK/$rname.out" 2>"$WORK/$rname.err" &
	RECV_PID=$!
	PIDS="$PIDS $RECV_PID"
	wait_for "$WORK/$rname.err" 'waiting for a migrating VM' "$RECV_PID" || { tail -n 5 "$WORK/$rname.err"; return 1; }
	RECV_ADDR=$(sed -n 's/.*listen=\(tcp:[^ ]*\).*/\1/p' "$WORK/$rname.err" | head -n 1)
}

# jnum KEY FILE: the first number of "KEY": in FILE (godwit migrate
# --json prints one key a line; the statistics come before the round
# records).
jnum() { sed -n "s/^ *\"$1\": \([-0-9.e+]*\),\{0,1\}\$/\1/p" "$2" | head -n 1; }
# round0 KEY FILE: KEY of the first round record (round 0).
round0() { sed -n '/^  "rounds": \[/,$p' "$2" | sed -n "s/^ *\"$1\": \([-0-9.e+]*\),\{0,1\}\$/\1/p" | head -n 1; }
# breakdown FILE: the rounds and the main parts of the downtime.
breakdown() {
	echo "rounds=$(jnum rounds "$1") pause_ms=$(jnum pause_ms "$1") final_sync_ms=$(jnum final_sync_ms "$1")" \
		"final_bytes=$(jnum final_bytes "$1") dest_other_ms=$(jnum dest_other_ms "$1")"
}
# commit_ms NAME: the receiver's disk_commit_ms (fsync and rename of the
# received images, inside the downtime), from its log.
commit_ms() { sed -n 's/.*VM received and running.* disk_commit_ms=\([0-9.e+-]*\).*/\1/p' "$WORK/$1-dst.err" | head -n 1; }
alloc_bytes() { echo $(($(du -k "$1" | cut -f1) * 1024)); }

# migrate_run NAME IMAGE STORAGE ARGS...: start the guest on IMAGE,
# migrate it to a fresh receiver (STORAGE=1: with its disk, into
# $WORK/NAME.dir; 0: shared, the receiver opens IMAGE), stop it there.
# Leaves the statistics in $WORK/NAME.json; returns non-zero on failure.
migrate_run() {
	name=$1 img=$2 storage=$3
	shift 3
	rm -rf "$WORK/$name.dir"
	mkdir -p "$WORK/$name.dir"
	start_vm "$name-src" "$img" || return 1
	src_pid=$VM_PID
	if [ "$storage" = 1 ]; then
		start_receiver "$name-dst" --storage-dir "$WORK/$name.dir" || return 1
		set -- --include-storage "$@"
	else
		start_receiver "$name-dst" || return 1
	fi
	dst_pid=$RECV_PID
	rc=0
	"$GODWIT" migrate --api-sock "$WORK/$name-src.sock" --to "$RECV_ADDR" --json "$@" \
		>"$WORK/$name.json" 2>"$WORK/$name.migrate-err" || rc=$?
	if [ "$rc" != 0 ]; then
		echo "  godwit migrate $*: exit $rc"
		sed 's/^/  | /' "$WORK/$name.migrate-err" | tail -n 10
		kill "$src_pid" "$dst_pid" 2>/dev/null
		wait "$src_pid" "$dst_pid" 2>/dev/null
		return 1
	fi
	wait_gone "$src_pid" || { echo "  the source exited with an error"; rc=1; }
	wait_for "$WORK/$name-dst.out" '^heartbeat ' "$dst_pid" || rc=1
	"$GODWIT" ctl --api-sock "$WORK/$name-dst.sock" shutdown >/dev/null || rc=1
	wait_gone "$dst_pid" || { echo "  the destination exited with an error"; tail -n 5 "$WORK/$name-dst.err"; rc=1; }
	return "$rc"
}

# raw_copy REP: copy $RAND over loopback TCP into a file while the test
# guest runs (as it does during godwit's copy); prints its BENCH-STORAGE
# line and sets RAW_SECS.
raw_copy() {
	start_vm raw-vm "$RAND" || { fail "raw copy $1: the guest did not start"; return 1; }
	raw_vm=$VM_PID
	raw_copy_alone "$1"
	rc=$?
	"$GODWIT" ctl --api-sock "$WORK/raw-vm.sock" shutdown >/dev/null 2>&1
	wait_gone "$raw_vm" >/dev/null
	return "$rc"
}

# raw_copy_alone REP: the copy of raw_copy.
raw_copy_alone() {
	out=$WORK/raw.out
	rm -f "$out"
	busybox nc -l -p "$RAW_PORT" -e busybox dd of="$out" bs=1048576 iflag=fullblock 2>"$WORK/raw.err" &
	lpid=$!
	PIDS="$PIDS $lpid"
	hex=$(printf ':%04X' "$RAW_PORT")
	i=0
	until cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }'; do
		i=$((i + 1))
		alive "$lpid" && [ "$i" -le $((STEP_TIMEOUT * 10)) ] || { fail "raw copy $1: nothing listens on port $RAW_PORT"; return 1; }
		sleep 0.1
	done
	a=$(now)
	busybox nc 127.0.0.1 "$RAW_PORT" -e busybox dd if="$RAND" bs=1048576 2>/dev/null
	wait_gone "$lpid"
	rc=$?
	b=$(now)
	RAW_SECS=$(calc "printf \"%.2f\", $b - $a")
	if [ "$rc" != 0 ] || ! cmp -s "$RAND" "$out"; then
		fail "raw copy $1: exit $rc, or the copy differs"
		return 1
	fi
	rm -f "$out"
	say "BENCH-STORAGE throughput raw rep=$1 bytes=$((THRU_MIB * 1048576)) secs=$RAW_SECS MBps=$(calc "if ($RAW_SECS > 0) printf \"%.1f\", $THRU_MIB * 1048576 / 1e6 / $RAW_SECS; else print \"inf\"")"
}

# thru_run REP COMPRESS: migrate the guest with the random image; prints
# its BENCH-STORAGE line.
thru_run() {
	if ! migrate_run thru "$RAND" 1 --compress "$2"; then
		fail "throughput $2 rep $1: migration failed"
		return 1
	fi
	j=$WORK/thru.json
	if ! cmp -s "$RAND" "$WORK/thru.dir/random.img"; then
		fail "throughput $2 rep $1: the received image differs"
	fi
	rm -rf "$WORK/thru.dir"
	disk=$(jnum disk_transferred_bytes "$j")
	r0ms=$(round0 duration_ms "$j")
	r0disk=$(round0 disk_bytes "$j")
	r0bytes=$(round0 bytes "$j")
	say "BENCH-STORAGE throughput $2 rep=$1 disk_bytes=$disk round0_disk_bytes=$r0disk round0_bytes=$r0bytes round0_ms=$r0ms total_ms=$(jnum total_ms "$j")" \
		"MBps=$(calc "if (${r0ms:-0} > 0) printf \"%.1f\", ${r0disk:-0} / 1e3 / $r0ms; else print \"inf\"")" \
		"wire_MBps=$(calc "if (${r0ms:-0} > 0) printf \"%.1f\", ${r0bytes:-0} / 1e3 / $r0ms; else print \"inf\"")"
}

# downtime_run REP STORAGE(0|1): one migration of the sparse image's
# guest; prints its BENCH-STORAGE line.
downtime_run() {
	label=shared
	[ "$2" = 1 ] && label=storage
	if ! migrate_run down "$SPARSE" "$2"; then
		fail "downtime $label rep $1: migration failed"
		return 1
	fi
	rm -rf "$WORK/down.dir"
	j=$WORK/down.json
	say "BENCH-STORAGE downtime $label rep=$1 downtime_ms=$(jnum downtime_ms "$j") total_ms=$(jnum total_ms "$j")" \
		"bytes=$(jnum transferred_bytes "$j") disk_bytes=$(jnum disk_transferred_bytes "$j") $(breakdown "$j") disk_commit_ms=$(commit_ms down)"
}

# median_of: the median of the numbers on standard input, one a line
# (empty when there are none).
median_of() {
	sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# median FIELD LINES-PATTERN: the median of FIELD=value over the
# BENCH-STORAGE lines matching the pattern in $WORK/log.
median() {
	grep -E "$2" "$WORK/log" | sed -n "s/.* $1=\([-0-9.e+]*\).*/\1/p" | median_of
}
one() { [ -n "$1" ] && calc "printf \"%.1f\", $1" || echo -; }
# pair_ratios KIND: each rep's KIND rate over the raw copy of the same
# rep (the two ran minutes apart at most, so a load that moves across
# the run moves both), one a line, sorted.
pair_ratios() {
	sed -n 's/^BENCH-STORAGE throughput \([a-z0-9]*\) rep=\([0-9]*\) .* MBps=\([0-9.]*\).*/\1 \2 \3/p' "$WORK/log" |
		awk -v k="$1" '$1 == "raw" { raw[$2] = $3 } $1 == k { g[$2] = $3 } END { for (r in g) if (raw[r] > 0) printf "%.2f\n", g[r] / raw[r] }' | sort -n
}
# pair_summary KIND: the median of pair_ratios and the list.
pair_summary() {
	pr=$(pair_ratios "$1")
	[ -n "$pr" ] || { echo -; return; }
	echo "$(calc "printf \"%.2f\", $(printf '%s\n' "$pr" | median_of)")x (reps: $(echo $pr))"
}
ratio() { [ -n "$1" ] && [ -n "$2" ] && calc "if ($2 > 0) printf \"%.2f\", $1 / $2; else print \"-\"" || echo -; }

mkdir -p "$WORK"
trap cleanup EXIT
command -v busybox >/dev/null || { echo "bench-storage: needs busybox (nc) in PATH"; exit 1; }
[ "$SPARSE_DATA_MIB" -ge 4 ] && [ "$SPARSE_MIB" -ge $((SPARSE_DATA_MIB * 4)) ] && [ "$THRU_MIB" -ge "$SPARSE_DATA_MIB" ] ||
	{ echo "bench-storage: want SPARSE_DATA_MIB >= 4, SPARSE_MIB >= 4 x SPARSE_DATA_MIB, THRU_MIB >= SPARSE_DATA_MIB"; exit 1; }
echo "BENCH-STORAGE-CONFIG reps=$REPS mem=$MEM guest_args='$GUEST_ARGS' sparse_mib=$SPARSE_MIB sparse_data_mib=$SPARSE_DATA_MIB thru_mib=$THRU_MIB kernel=$(uname -r) cpus=$(nproc)"
: >"$WORK/log"
a=$(now)
dd if=/dev/urandom of="$RAND" bs=1048576 count="$THRU_MIB" 2>/dev/null
echo "BENCH-STORAGE-INFO $THRU_MIB MiB of random data in $(calc "printf \"%.1f\", $(now) - $a")s"
# The sparse image: four runs of SPARSE_DATA_MIB/4 (from the random
# image), at 0, a third in plus 4 KiB (unaligned to the disk blocks),
# two thirds in, and at the end.
run=$((SPARSE_DATA_MIB / 4))
dd if=/dev/zero of="$SPARSE" bs=1048576 count=0 seek="$SPARSE_MIB" 2>/dev/null
k=0
for off in 0 $((SPARSE_MIB / 3 * 256 + 1)) $((SPARSE_MIB * 2 / 3 * 256)) $(((SPARSE_MIB - run) * 256)); do
	dd if="$RAND" of="$SPARSE" bs=4096 skip=$((k * run * 256)) seek="$off" count=$((run * 256)) conv=notrunc 2>/dev/null
	k=$((k + 1))
done
sparse_data=$((run * 4 * 1048576))
# Pausing the source flushes its image (fdatasync): written back now, the
# images' fresh data does not lengthen the first migration's downtime.
sync

# Sparse.
if migrate_run sparse "$SPARSE" 1; then
	j=$WORK/sparse.json
	got=$WORK/sparse.dir/sparse.img
	same=no
	cmp -s "$SPARSE" "$got" && same=yes
	size=$(wc -c <"$got")
	src_alloc=$(alloc_bytes "$SPARSE")
	dst_alloc=$(alloc_bytes "$got")
	sparse=no
	[ "$dst_alloc" -le $((src_alloc + src_alloc / 8)) ] && sparse=yes
	say "BENCH-STORAGE sparse image_bytes=$(wc -c <"$SPARSE") received_bytes=$size data_bytes=$sparse_data" \
		"src_allocated=$src_alloc dst_allocated=$dst_alloc disk_wire_bytes=$(jnum disk_transferred_bytes "$j")" \
		"wire_bytes=$(jnum transferred_bytes "$j") downtime_ms=$(jnum downtime_ms "$j") $(breakdown "$j") disk_commit_ms=$(commit_ms sparse) total_ms=$(jnum total_ms "$j") equal=$same sparse=$sparse"
	[ "$same" = yes ] && [ "$sparse" = yes ] || fail "sparse: received image equal=$same sparse=$sparse"
	rm -rf "$WORK/sparse.dir"
else
	fail "sparse: migration failed"
fi

# A warm-up, not counted: a raw copy and an lz4 migration. In four runs
# of five (session 10) the first copies were the slowest of their run,
# godwit's and the raw copy's alike (by a quarter to a half), probably
# because they are the first to fill that much fresh memory in the
# nested host, whose RAM the outer QEMU only backs on first touch.
cp "$WORK/log" "$WORK/log.keep"
raw_copy warmup
thru_run warmup lz4
mv "$WORK/log.keep" "$WORK/log"

# Throughput and downtime, alternating; the compressions swap places
# every rep, so that neither always runs first after the raw copy.
rep=1
while [ "$rep" -le "$REPS" ]; do
	raw_copy "$rep"
	if [ $((rep % 2)) = 1 ]; then
		thru_run "$rep" lz4
		thru_run "$rep" none
	else
		thru_run "$rep" none
		thru_run "$rep" lz4
	fi
	downtime_run "$rep" 1
	downtime_run "$rep" 0
	rep=$((rep + 1))
done
sp=$(grep '^BENCH-STORAGE sparse ' "$WORK/log" | head -n 1)
field() { printf '%s\n' "$sp" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
raw=$(median MBps 'throughput raw ')
lz4=$(median MBps 'throughput lz4 ')
none=$(median MBps 'throughput none ')
lz4w=$(median wire_MBps 'throughput lz4 ')
nonew=$(median wire_MBps 'throughput none ')
dst=$(median downtime_ms 'downtime storage ')
dsh=$(median downtime_ms 'downtime shared ')
dcommit=$(median disk_commit_ms 'downtime storage ')
echo STORAGEBENCH-TABLE-BEGIN
echo "storage migration, test guest ($MEM RAM), loopback TCP, medians of $REPS runs; kernel $(uname -r), $(nproc) CPUs"
if [ -n "$sp" ]; then
	echo "sparse image: $(field image_bytes) bytes apparent, $(field data_bytes) of random data, $(field src_allocated) allocated"
	echo "  disk bytes on the wire $(field disk_wire_bytes) ($(ratio "$(field disk_wire_bytes)" "$(field data_bytes)")x the data), all bytes $(field wire_bytes)"
	echo "  received: $(field dst_allocated) allocated; equal to the source: $(field equal); sparse: $(field sparse)"
else
	echo "sparse image: failed"
fi
echo "throughput, $THRU_MIB MiB of random data, MB/s (10^6 bytes/s): godwit's disk bytes of round 0 / round 0's time"
echo "(its memory pages share the round: all its bytes / its time in brackets), against a raw copy of the image"
echo "  raw copy, nc + dd:          $(one "$raw") MB/s"
echo "  godwit --compress lz4:      $(one "$lz4") MB/s ($(one "$lz4w"))   ratio to raw $(ratio "$lz4" "$raw")x (goal >= 0.8)"
echo "  godwit --compress none:     $(one "$none") MB/s ($(one "$nonew"))   ratio to raw $(ratio "$none" "$raw")x"
echo "  each rep over its own raw copy, median: lz4 $(pair_summary lz4); none $(pair_summary none)"
echo "downtime, sparse image's guest:"
echo "  with --include-storage:     $(one "$dst") ms (the receiver's disk commit: $(one "$dcommit") ms)"
echo "  shared storage:             $(one "$dsh") ms"
echo "  ratio                       $(ratio "$dst" "$dsh")x (goal <= 1.5)"
[ "$FAILED" = 0 ] || echo "some runs failed: see BENCH-STORAGE-FAILED above"
echo STORAGEBENCH-TABLE-END
exit "$FAILED"
PAYLOAD
)

out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
if use_direct_kvm; then
	export REPS MEM GUEST_ARGS SPARSE_MIB SPARSE_DATA_MIB THRU_MIB RAW_PORT STEP_TIMEOUT
	GODWIT="$ABS_BIN/godwit" sh -c "$payload" | tee "$out" || status=$?
else
	"$BIN_DIR/nested" --timeout "$((10 + REPS * 5))m" --add "$BIN_DIR/godwit:/bin/godwit" \
		--env "REPS=$REPS" --env "MEM=$MEM" --env "GUEST_ARGS=$GUEST_ARGS" --env "SPARSE_MIB=$SPARSE_MIB" --env "SPARSE_DATA_MIB=$SPARSE_DATA_MIB" \
		--env "THRU_MIB=$THRU_MIB" --env "RAW_PORT=$RAW_PORT" --env "STEP_TIMEOUT=$STEP_TIMEOUT" \
		--run "$payload" | tee "$out" || status=$?
fi
step "storage migration benchmark results"
if ! tr -d '\r' <"$out" | sed -n '/^STORAGEBENCH-TABLE-BEGIN$/,/^STORAGEBENCH-TABLE-END$/p' | grep -v '^STORAGEBENCH-TABLE-'; then
	warn "no result table (exit status $status)"
fi
exit "$status"
