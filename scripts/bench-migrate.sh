#!/usr/bin/env bash
# Live-migration benchmark: an idle stock Debian guest (256 MiB, 1 vCPU,
# the busybox initramfs printing a tick every second) migrated over
# loopback TCP by godwit (defaults, and --compress none) and by Debian's
# QEMU/KVM, alternating, REPS times each, in the same nested host (or
# directly with a hardware /dev/kvm and qemu-system-x86_64). Prints every
# run and a table of medians with the godwit/QEMU ratios for downtime,
# total time and bytes (see test/bench/migratebench).
#
#   REPS=3 scripts/bench-migrate.sh
#   BIN_DIR=bin-bench MIGRATEBENCH_ARGS="--variants godwit,qemu" scripts/bench-migrate.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
REPS=${REPS:-2}
MIGRATEBENCH_ARGS=${MIGRATEBENCH_ARGS:-}
build_harness
go build -o "$BIN_DIR/godwit" ./cmd/godwit
go build -o "$BIN_DIR/migratebench" ./test/bench/migratebench

out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
if use_direct_kvm && command -v qemu-system-x86_64 >/dev/null; then
	eval "$("$BIN_DIR/nested" --print-env)"
	# shellcheck disable=SC2086 # MIGRATEBENCH_ARGS is a list of flags
	"$ABS_BIN/migratebench" --reps "$REPS" --godwit "$ABS_BIN/godwit" \
		--kernel "$GODWIT_KERNEL" --initrd "$GODWIT_INITRD" $MIGRATEBENCH_ARGS | tee "$out" || status=$?
else
	# Roughly 1.5 minutes a run under the nested host's TCG, three variants.
	"$BIN_DIR/nested" --with-qemu --silence 5m --timeout "$((10 + REPS * 6))m" \
		--add "$BIN_DIR/godwit:/bin/godwit" --add "$BIN_DIR/migratebench:/bin/migratebench" \
		--env "REPS=$REPS" --env "MIGRATEBENCH_ARGS=$MIGRATEBENCH_ARGS" \
		--run '/bin/migratebench $MIGRATEBENCH_ARGS' | tee "$out" || status=$?
fi
step "migration benchmark results"
if ! tr -d '\r' <"$out" | sed -n '/^MIGRATEBENCH-TABLE-BEGIN$/,/^MIGRATEBENCH-TABLE-END$/p' | grep -v '^MIGRATEBENCH-TABLE-' ; then
	warn "no result table (exit status $status)"
fi
exit "$status"
