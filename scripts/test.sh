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
trap 'rm -f "$ilog" "$ilog".*' EXIT
run_integration() {
	# The test binary runs in its package directory so testdata/ resolves.
	if use_direct_kvm; then
		assets=$("$BIN_DIR/nested" --print-env)
		eval "$assets"
		export GODWIT_KERNEL GODWIT_INITRD
		if ((have_godwit)); then export GODWIT_BIN=$ABS_BIN/godwit; fi
		(cd test/integration && "$ABS_BIN/integration.test" -test.v -test.timeout "$((nested_limit - 60))s" "$@") 2>&1 | tee "$ilog"
	else
		local adds=(--add "$BIN_DIR/integration.test:/bin/integration.test")
		if [[ -d test/integration/testdata ]]; then
			adds+=(--add test/integration/testdata:/src/test/integration/testdata)
		fi
		if ((have_godwit)); then adds+=(--add "$BIN_DIR/godwit:/bin/godwit"); fi
		# GODWIT_TEST_LONG=1 also runs the tests that take minutes there.
		if [[ ${GODWIT_TEST_LONG:-} == 1 ]]; then adds+=(--env GODWIT_TEST_LONG=1); fi
		# Hop counts of the long ping-pong tests: TestSoakPingpong (default
		# 100), TestLinuxSoak (50), TestLinuxStoragePingpong (10).
		for hops in GODWIT_SOAK_HOPS GODWIT_LINUX_SOAK_HOPS GODWIT_STORAGE_HOPS; do
			if [[ -n ${!hops:-} ]]; then adds+=(--env "$hops=${!hops}"); fi
		done
		local quoted
		quoted=$(printf '%q ' "$@")
		# shellcheck disable=SC2086
		# Three silent minutes mean a frozen nested host (a healthy run
		# prints at least every two: the tests' console waits end there);
		# the long tests include a benchmark that prints only at its end.
		local silence=3m
		if [[ ${GODWIT_TEST_LONG:-} == 1 ]]; then silence=12m; fi
		"$BIN_DIR/nested" "${adds[@]}" --timeout "${nested_limit}s" --silence "$silence" $NESTED_ARGS \
			--run "mkdir -p /src/test/integration && cd /src/test/integration && /bin/integration.test -test.v -test.timeout $((nested_limit - 60))s $quoted" 2>&1 | tee "$ilog"
	fi
	return "${PIPESTATUS[0]}"
}
# Known open bug: in the nested host (QEMU 7.2 TCG emulating SVM) guests
# and the nested host itself sometimes break: a guest triple-faults (a #PF
# on the instruction fetch right after an I/O exit, seen in KVM traces),
# a guest stops making progress (the test's 3-minute limit expires), or
# the nested host kernel panics with a corrupted kernel stack in the godwit
# process, which ends the run, or a godwit process stops answering its API
# without logging why. QEMU's own guests under the same nested KVM
# hit it far less often; the cause is not found (see docs/testing.md).
# A run whose failures all show one of these symptoms is retried, at most
# four times within the stage's 20 minutes, with every test that has not
# passed yet (so a nested host that died mid-run still runs the rest);
# each retry is reported loudly, and any other failure fails at once.
known_symptoms='guest triple fault \(KVM_EXIT_SHUTDOWN\)|no godwit VM listening on|no [^:]+ within [0-9]+m|did not (exit|finish|log) .*within|nested host stopped without|nested host wedged|FAIL: timeout after|Kernel panic|did not answer in time'
# passed_tests prints the top-level tests that passed in any run so far.
passed_tests() {
	grep -ohE '^--- PASS: Test[A-Za-z0-9_]+' "$@" | awk '{print $3}' | sort -u
}
# only_known_symptoms succeeds when the run logged in $1 failed only in the
# known ways: the output of every failed top-level test (from its
# "=== RUN" line to its "--- FAIL" line) shows a known symptom, or the
# nested host died (then the test it was running has no "--- FAIL" line).
only_known_symptoms() {
	local failed died=0 name
	mapfile -t failed < <(grep -oE '^--- FAIL: Test[A-Za-z0-9_]+' "$1" | awk '{print $3}' | sort -u)
	if grep -qE 'nested host stopped without|nested host wedged|FAIL: timeout after' "$1"; then died=1; fi
	((${#failed[@]} + died > 0)) || return 1
	local block
	for name in "${failed[@]}"; do
		# Into a variable first: grep -q stops reading at its first match,
		# and under pipefail the SIGPIPE that awk then gets for a long
		# block would read as "no known symptom".
		block=$(awk -v t="$name" '
			$0 == "=== RUN   " t { on = 1 }
			on { print }
			on && index($0, "--- FAIL: " t " ") == 1 { exit }
		' "$1")
		if ! grep -qE "$known_symptoms" <<<"$block"; then
			warn "$name failed without a known nested-host symptom"
			return 1
		fi
	done
}
# failure_summary prints, for each failed test in the run logged in $1
# (subtests included), the last 40 lines of the messages its test code
# logged ("x_test.go:N:" lines with up to 3 continuation lines each), so
# that the end of the log, which CI shows, says why it failed.
failure_summary() {
	awk '
		function keep(line) { lines[cur, ++n[cur]] = substr(line, 1, 300) }
		/^=== (RUN|CONT|NAME) +Test/ { cur = $3; cont = 0; next }
		/^ *--- FAIL: Test/ { failed[++nf] = $3; next }
		/^ +[A-Za-z0-9_]+_test\.go:[0-9]+: / { keep($0); cont = 3; next }
		cont > 0 && /^        / { cont--; keep($0); next }
		{ cont = 0 }
		END {
			if (nf == 0) exit
			print "failed tests and what they logged:"
			for (i = 1; i <= nf; i++) {
				t = failed[i]
				if (!n[t]) continue
				print "  " t ":"
				for (j = (n[t] > 40 ? n[t] - 39 : 1); j <= n[t]; j++) print lines[t, j]
			}
		}
	' "$1" >&2
}
logs=()
attempt=0
# The stage's limit: 20 minutes (CI's budget is 30 for everything), 50
# with the long tests (GODWIT_TEST_LONG=1).
stage_limit=$((20 * 60))
if [[ ${GODWIT_TEST_LONG:-} == 1 ]]; then stage_limit=$((50 * 60)); fi
nested_limit=$((stage_limit - 2 * 60))
# shellcheck disable=SC2086
until run_integration $INTEGRATION_ARGS ${skip_passed:+-test.skip "$skip_passed"}; do
	cp "$ilog" "$ilog.$attempt"
	logs+=("$ilog.$attempt")
	attempt=$((attempt + 1))
	if ((attempt > 4)); then
		warn "no retry left: the run failed $attempt times"
		failure_summary "$ilog"
		exit 1
	fi
	if ! only_known_symptoms "$ilog"; then
		warn "no retry: a test failed in a way other than the known nested-host symptoms"
		failure_summary "$ilog"
		exit 1
	fi
	# The whole integration stage stays within 20 minutes (CI's budget is
	# 30 for everything): a retry gets what is left, at least 3 minutes
	# (it runs only the tests not passed yet).
	nested_limit=$((stage_limit - (SECONDS - t)))
	if ((nested_limit < 3 * 60)); then
		warn "no retry: the integration stage already took $(((SECONDS - t) / 60)) minutes"
		failure_summary "$ilog"
		exit 1
	fi
	mapfile -t passed < <(passed_tests "${logs[@]}")
	skip_passed=""
	if ((${#passed[@]})); then
		skip_passed="^($(IFS='|'; echo "${passed[*]}"))\$"
	fi
	warn "KNOWN FLAKE (retry $attempt of 4): the run failed only with the known nested-host symptoms; running every test not passed yet"
done
if ((attempt > 0)); then
	warn "KNOWN FLAKE: all tests passed after $attempt retries (open bug: guests and the nested host intermittently break under QEMU TCG)"
fi
timing integration "$t"
print_timings
echo "==> make test: PASS" >&2
