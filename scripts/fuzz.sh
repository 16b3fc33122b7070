#!/usr/bin/env bash
# make fuzz: run every Fuzz* target of the module, one at a time, for
# FUZZTIME each, and print a table of what each did.
#
#   FUZZTIME      per target (default 10s); also a count such as 10000x
#   FUZZ_BUDGET   seconds; start no new target once this much time has passed
#                 (0: no budget)
#   FUZZ_MATCH    extended regex on "PACKAGE NAME" selecting targets
#                 (default: all), e.g. FUZZ_MATCH='migrate |FuzzPCI'
#   FUZZ_PARALLEL fuzzing workers per target (default: go's, GOMAXPROCS)
#   FUZZ_SUMMARY  file to write the table to as well (markdown)
#   FUZZ_MINIMIZE -fuzzminimizetime (default 0: report a failing input as
#                 found). Go drops a failure whose minimization is still
#                 running when FUZZTIME ends and reports PASS, so minimize
#                 only with time to spare, e.g. FUZZ_MINIMIZE=30s for a
#                 long run.
#
# CI runs a short pass (.ci/run: FUZZTIME=5s within the time left). The
# long run, for a change to a decoder or before a release, is
#
#   FUZZTIME=10m ./scripts/fuzz.sh          # or: make fuzz-long
#
# which takes about 10 minutes per target. A failing target does not stop
# the run: its failing input is in the package's testdata/fuzz/FuzzX/ (go
# test writes it there; commit it as a regression seed once fixed), the
# table marks it, and the script exits 1 at the end. Committed seeds under
# testdata/fuzz/ are always run, by every plain `go test` too.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
FUZZTIME=${FUZZTIME:-10s}
FUZZ_BUDGET=${FUZZ_BUDGET:-0}
FUZZ_MATCH=${FUZZ_MATCH:-.}
FUZZ_PARALLEL=${FUZZ_PARALLEL:-}
FUZZ_SUMMARY=${FUZZ_SUMMARY:-}
FUZZ_MINIMIZE=${FUZZ_MINIMIZE:-0}

# `go test -list` prints a package's matching names, then its "ok  <pkg>" line.
list=$(go test -list '^Fuzz' ./...)
mapfile -t targets < <(awk '
	/^Fuzz/ { names[n++] = $1; next }
	/^ok / { for (i = 0; i < n; i++) print $2, names[i]; n = 0; next }
	{ n = 0 }' <<<"$list" | grep -E -- "$FUZZ_MATCH" || true)
if ((${#targets[@]} == 0)); then
	echo "no Fuzz targets found (FUZZ_MATCH=$FUZZ_MATCH)" >&2
	exit 0
fi
echo "${#targets[@]} fuzz targets, $FUZZTIME each" >&2

parallel=()
if [[ -n $FUZZ_PARALLEL ]]; then parallel=(-parallel "$FUZZ_PARALLEL"); fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rows=()
failed=0
start=$SECONDS
for entry in "${targets[@]}"; do
	read -r pkg name <<<"$entry"
	if ((FUZZ_BUDGET > 0 && SECONDS - start >= FUZZ_BUDGET)); then
		warn "fuzz budget of ${FUZZ_BUDGET}s used up: skipping $pkg $name and the rest"
		rows+=("| $name | ${pkg#godwit/} | skipped (budget) | |")
		continue
	fi
	step "fuzz $pkg $name"
	t0=$SECONDS
	status=ok
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZ_MINIMIZE" "${parallel[@]}" "$pkg" 2>&1 | tee "$log" >&2; then
		if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log"; then
			# Go before 1.27 (golang/go#75804): a worker still busy when
			# -fuzztime expires fails the run with this error and no
			# failing input. Not a finding of the target's.
			warn "$name: Go's fuzz coordinator reported its own deadline (golang/go#75804), no failing input: counted as a pass"
		else
			status=FAILED
			failed=$((failed + 1))
		fi
	fi
	# The fuzzer's last progress line holds the total number of executions.
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | awk '{print $2}' || true)
	crash=0
	if [[ $status == FAILED ]]; then
		crash=$(grep -o 'testdata/fuzz/[^ ]*' "$log" | tail -n 1 || true)
		crash=${crash:-1 (see the log)}
	fi
	rows+=("| $name | ${pkg#godwit/} | ${execs:-?} in $((SECONDS - t0))s | $crash |")
done

table=$(printf '| target | package | execs | crashes |\n|---|---|---|---|\n'; printf '%s\n' "${rows[@]}")
printf '\n%s\n' "$table" >&2
if [[ -n $FUZZ_SUMMARY ]]; then
	printf '%s\n' "$table" >"$FUZZ_SUMMARY"
fi
if ((failed > 0)); then
	echo "$failed fuzz target(s) failed; their inputs are in testdata/fuzz/" >&2
	exit 1
fi
