#!/usr/bin/env bash
# Migration engine benchmark, no KVM needed: BenchmarkEngineVsTCP migrates
# a 128 MiB fake VM (incompressible pages without and with LZ4,
# compressible pages with LZ4) and, in the same run, copies the same
# number of bytes over a bare connection, on two links: bare loopback TCP
# (memory speed: the CPUs bound everything) and loopback TCP paced to
# 1 Gbit/s (the link bounds it, as between hosts on a gigabit network).
# Prints MB/s of guest RAM per second and, per link, the ratios to raw TCP
# on that link (issue 4's goals: at least 0.9 for incompressible pages, at
# least 2 effective for compressible ones). raw-tcp-fresh-ram, the raw
# copy read into fresh guest RAM, shows what the destination's page
# allocation alone costs on this host.
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
step "engine vs raw TCP, per link"
python3 - "$out" <<'PY'
import re, statistics, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"BenchmarkEngineVsTCP/(\S+?)(-\d+)?\s+\d+\s+\d+ ns/op\s+([0-9.]+) MB/s", line)
    if m:
        link, _, name = m.group(1).rpartition("/")
        rates.setdefault(link or "loopback", {}).setdefault(name, []).append(float(m.group(3)))
goals = {"incompressible-none": 0.9, "incompressible-lz4": 0.9, "compressible-lz4": 2.0}
for link in ("loopback", "1GbE"):
    r = rates.get(link, {})
    if "raw-tcp" not in r:
        sys.exit("bench-engine: no raw-tcp result for link %s" % link)
    raw = statistics.median(r["raw-tcp"])
    print("%-9s %-20s %10s %8s %6s" % ("link", "", "MB/s", "/ raw", "goal"))
    print("%-9s %-20s %10.0f %8s %6s" % (link, "raw-tcp", raw, "1.00", ""))
    if "raw-tcp-fresh-ram" in r:
        v = statistics.median(r["raw-tcp-fresh-ram"])
        print("%-9s %-20s %10.0f %8.2f %6s %s" % (link, "raw-tcp-fresh-ram", v, v / raw, "", "(reference: raw copy into fresh guest RAM)"))
    for name, goal in goals.items():
        if name in r:
            v = statistics.median(r[name])
            print("%-9s %-20s %10.0f %8.2f %6s %s" % (link, name, v, v / raw, ">=%g" % goal, "met" if v / raw >= goal else "NOT met"))
    print()
PY
