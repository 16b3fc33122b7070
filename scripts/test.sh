#!/usr/bin/env bash
# The single test command (make test): gofmt, go vet, unit tests, then the
# integration tests (package godwit/test/integration) with /dev/kvm, directly
# when this machine's /dev/kvm is usable, else inside the nested host.
#
# Environment:
#   GODWIT_NESTED=1|0   force the nested host / direct /dev/kvm
#   GODWIT_CACHE        asset cache (default $HOME/.cache/godwit)
#   INTEGRATION_ARGS    extra flags for the integration test binary (e.g. -test.run=X)
#   NESTED_ARGS         extra flags for the harness (e.g. --with-qemu --mem 6144)
#   SKIP_UNIT=1         skip the gofmt/vet/unit stages
#   BIN_DIR             where binaries go (default bin)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

INTEGRATION_ARGS=${INTEGRATION_ARGS:-}
NESTED_ARGS=${NESTED_ARGS:-}

if [[ ${SKIP_UNIT:-0} != 1 ]]; then
	t=$SECONDS
	step "gofmt"
	bad=$(find . -name '*.go' -not -path './.cache/*' -not -path './bin/*' -not -path './out/*' -print0 | xargs -0 gofmt -l)
	if [[ -n $bad ]]; then
		echo "gofmt needed on:" >&2
		echo "$bad" >&2
		exit 1
	fi
	step "go vet ./..."
	go vet ./...
	timing lint "$t"

	t=$SECONDS
	step "unit tests"
	# The integration package runs in its own stage below: some sandboxes have
	# a /dev/kvm that answers ioctls but cannot run guests.
	mapfile -t pkgs < <(go list ./... | grep -v '^godwit/test/integration$')
	go test "${pkgs[@]}"
	timing unit "$t"
fi

t=$SECONDS
step "build"
build_harness
have_godwit=1
if ! go build -o "$BIN_DIR/godwit" ./cmd/godwit; then
	warn "./cmd/godwit does not build: integration tests run without GODWIT_BIN"
	rm -f "$BIN_DIR/godwit"
	have_godwit=0
fi
go test -c -o "$BIN_DIR/integration.test" ./test/integration
timing build "$t"

t=$SECONDS
step "integration tests"
# run_integration ARGS...: run the integration test binary with ARGS,
# directly or in the nested host, its output also in $ilog.
ilog=$(mktemp)
trap 'rm -f "$ilog"' EXIT
run_integration() {
	# The test binary runs in its package directory so testdata/ resolves.
	if use_direct_kvm; then
		assets=$("$BIN_DIR/nested" --print-env)
		eval "$assets"
		export GODWIT_KERNEL GODWIT_INITRD
		if ((have_godwit)); then export GODWIT_BIN=$ABS_BIN/godwit; fi
		(cd test/integration && "$ABS_BIN/integration.test" -test.v -test.timeout 16m "$@") 2>&1 | tee "$ilog"
	else
		local adds=(--add "$BIN_DIR/integration.test:/bin/integration.test")
		if [[ -d test/integration/testdata ]]; then
			adds+=(--add test/integration/testdata:/src/test/integration/testdata)
		fi
		if ((have_godwit)); then adds+=(--add "$BIN_DIR/godwit:/bin/godwit"); fi
		local quoted
		quoted=$(printf '%q ' "$@")
		# shellcheck disable=SC2086
		"$BIN_DIR/nested" "${adds[@]}" --timeout 18m $NESTED_ARGS \
			--run "mkdir -p /src/test/integration && cd /src/test/integration && /bin/integration.test -test.v -test.timeout 16m $quoted" 2>&1 | tee "$ilog"
	fi
	return "${PIPESTATUS[0]}"
}
# flaky_failures prints the tests that failed in $ilog when every failure
# shows the known nested-host symptoms, and fails otherwise.
#
# Known open bug: a guest in the nested host sometimes stops during boot,
# with "guest triple fault" on a vCPU or silently (its clock stops and the
# test's 3-minute limit expires); the cause is not found yet (see the
# session notes). Tests that failed only that way run again, at most twice,
# each retry reported loudly; any other failure fails at once.
flaky_failures() {
	local failed faults
	mapfile -t failed < <(grep -oE '^--- FAIL: Test[A-Za-z0-9_]+' "$ilog" | awk '{print $3}' | sort -u)
	faults=$(grep -cE 'guest triple fault \(KVM_EXIT_SHUTDOWN\)|no guest (userspace|command start) within' "$ilog" || true)
	((${#failed[@]} > 0 && faults >= ${#failed[@]})) || return 1
	printf '%s\n' "${failed[@]}"
}
# shellcheck disable=SC2086
if ! run_integration $INTEGRATION_ARGS; then
	for attempt in 1 2; do
		if ! mapfile -t failed < <(flaky_failures) || ((${#failed[@]} == 0)); then
			exit 1
		fi
		pattern=$(IFS='|'; echo "${failed[*]}")
		warn "KNOWN FLAKE (retry $attempt of 2): ${failed[*]} failed only with a guest that stopped during boot; running them again"
		if run_integration -test.run "^(${pattern})\$"; then
			warn "KNOWN FLAKE: ${failed[*]} passed on retry $attempt (open bug: guests intermittently stop in the nested host)"
			break
		fi
		if ((attempt == 2)); then
			exit 1
		fi
	done
fi
timing integration "$t"
print_timings
echo "==> make test: PASS" >&2
