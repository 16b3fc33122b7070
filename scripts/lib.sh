# Shared helpers for scripts/*.sh (sourced, not run).
# shellcheck shell=bash

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/usr/local/go/bin:$PATH"
# Static binaries: the nested host has no libc.
export CGO_ENABLED=0
# BIN_DIR: where binaries go (default bin/; set it to keep parallel runs apart).
BIN_DIR=${BIN_DIR:-bin}

step() { printf '\n==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }

# timing NAME START: record how long a stage took (printed by print_timings).
TIMINGS=()
timing() { TIMINGS+=("$1 $((SECONDS - $2))s"); }
print_timings() {
	local t
	printf '\n==> timings:' >&2
	for t in "${TIMINGS[@]}"; do printf ' [%s]' "$t" >&2; done
	printf '\n' >&2
}

# build_harness builds the nested-host harness (a binary, so the payload's
# exit code passes through unchanged, which `go run` does not do).
build_harness() {
	mkdir -p "$BIN_DIR"
	ABS_BIN=$(cd "$BIN_DIR" && pwd)
	CGO_ENABLED=0 go build -o "$BIN_DIR/nested" ./test/nested
}

# use_direct_kvm succeeds when tests can use this machine's /dev/kvm
# (GODWIT_NESTED=1 forces the nested host, GODWIT_NESTED=0 forces direct).
use_direct_kvm() { "$BIN_DIR/nested" --kvm-check; }
