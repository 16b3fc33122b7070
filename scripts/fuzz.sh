#!/usr/bin/env bash
# make fuzz: run every Fuzz* target of the module for FUZZTIME each.
#   FUZZTIME     per target (default 10s)
#   FUZZ_BUDGET  seconds; start no new target once this much time has passed
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
FUZZTIME=${FUZZTIME:-10s}
FUZZ_BUDGET=${FUZZ_BUDGET:-0}

# `go test -list` prints a package's matching names, then its "ok  <pkg>" line.
list=$(go test -list '^Fuzz' ./...)
mapfile -t targets < <(awk '
	/^Fuzz/ { names[n++] = $1; next }
	/^ok / { for (i = 0; i < n; i++) print $2, names[i]; n = 0; next }
	{ n = 0 }' <<<"$list")
if ((${#targets[@]} == 0)); then
	echo "no Fuzz targets found" >&2
	exit 0
fi
echo "${#targets[@]} fuzz targets, $FUZZTIME each" >&2
start=$SECONDS
for entry in "${targets[@]}"; do
	read -r pkg name <<<"$entry"
	if ((FUZZ_BUDGET > 0 && SECONDS - start >= FUZZ_BUDGET)); then
		warn "fuzz budget of ${FUZZ_BUDGET}s used up: skipping $pkg $name and the rest"
		break
	fi
	step "fuzz $pkg $name"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"
done
