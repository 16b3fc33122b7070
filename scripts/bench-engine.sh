#!/usr/bin/env bash
# Migration engine benchmark, no KVM needed: BenchmarkEngineVsTCP migrates
# a 128 MiB fake VM over loopback TCP (incompressible pages without and
# with LZ4, compressible pages with LZ4) and, in the same run, copies the
# same number of bytes over a bare loopback connection. Prints MB/s of
# guest RAM per second and the ratios to raw TCP (issue 4's goals: at
# least 0.9 for incompressible pages, at least 2 effective for
# compressible ones).
#
#   scripts/bench-engine.sh              # BENCHTIME=5x COUNT=3
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
BENCHTIME=${BENCHTIME:-5x}
COUNT=${COUNT:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
step "BenchmarkEngineVsTCP (benchtime $BENCHTIME, count $COUNT)"
go test -run '^$' -bench '^BenchmarkEngineVsTCP$' -benchtime "$BENCHTIME" -count "$COUNT" ./migrate/ | tee "$out"
step "engine vs raw TCP"
python3 - "$out" <<'PY'
import re, statistics, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"BenchmarkEngineVsTCP/(\S+?)(-\d+)?\s+\d+\s+\d+ ns/op\s+([0-9.]+) MB/s", line)
    if m:
        rates.setdefault(m.group(1), []).append(float(m.group(3)))
if "raw-tcp" not in rates:
    sys.exit("bench-engine: no raw-tcp result")
raw = statistics.median(rates["raw-tcp"])
goals = {"incompressible-none": 0.9, "incompressible-lz4": 0.9, "compressible-lz4": 2.0}
print("%-22s %10s %8s %6s" % ("", "MB/s", "/ raw", "goal"))
print("%-22s %10.0f %8s %6s" % ("raw-tcp", raw, "1.00", ""))
for name, goal in goals.items():
    if name in rates:
        r = statistics.median(rates[name])
        print("%-22s %10.0f %8.2f %6s %s" % (name, r, r / raw, ">=%g" % goal, "met" if r / raw >= goal else "NOT met"))
PY
