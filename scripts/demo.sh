#!/usr/bin/env bash
# make demo: build godwit and run `godwit demo` (the main job) with /dev/kvm,
# directly when usable, else inside the nested host.
#   DEMO_ARGS    extra flags for `godwit demo`
#   NESTED_ARGS  extra flags for the harness
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
DEMO_ARGS=${DEMO_ARGS:-}
NESTED_ARGS=${NESTED_ARGS:-}

t=$SECONDS
step "build"
build_harness
go build -o "$BIN_DIR/godwit" ./cmd/godwit
timing build "$t"

t=$SECONDS
step "godwit demo"
if use_direct_kvm; then
	# shellcheck disable=SC2086
	"$BIN_DIR/godwit" demo $DEMO_ARGS
else
	# shellcheck disable=SC2086
	"$BIN_DIR/nested" --add "$BIN_DIR/godwit:/bin/godwit" $NESTED_ARGS --run "/bin/godwit demo $DEMO_ARGS"
fi
timing demo "$t"
print_timings
