#!/usr/bin/env bash
# Two logpipe binaries side by side on bench/e2e.sh, alternating A, B, A, B…
# on the same machine, so drift in a shared machine's speed hits both.
#
# Usage: bench/compare.sh BIN_A BIN_B [PAIRS=3] [COUNT=2000000] [KIND=logs]
# Prints one line per run (end-to-end records/s, server CPU µs/record, peak
# RSS) and the median of each binary.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1
B=$2
PAIRS=${3:-3}
COUNT=${4:-2000000}
KIND=${5:-logs}

run() {
  LOGPIPE_BIN=$1 bench/e2e.sh "$COUNT" "$KIND" 1000 4 | awk -v who="$2" '
    /records\/s end to end/ { gsub(/[(,]/, "", $7); rate = $7 }
    /server CPU\/record/    { cpu = $3 }
    /peak RSS/              { rss = $4 }
    END { printf "%s %s %s %s\n", who, rate, cpu, rss }'
}

RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for pair in $(seq "$PAIRS"); do
  run "$A" A | tee -a "$RESULTS"
  run "$B" B | tee -a "$RESULTS"
done
python3 - "$RESULTS" "$KIND" "$COUNT" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print(f"\n{sys.argv[2]}, {sys.argv[3]} records; median of {len(rows) // 2} runs each")
for who in ("A", "B"):
    mine = [r for r in rows if r[0] == who]
    rate = statistics.median(float(r[1]) for r in mine)
    cpu = statistics.median(float(r[2]) for r in mine)
    rss = statistics.median(float(r[3]) for r in mine)
    print(f"{who}: {rate:,.0f} records/s end to end, {cpu:.2f} µs server CPU/record, {rss:.0f} MiB peak RSS"
          f"  (runs: {', '.join(f'{float(r[1]):,.0f}' for r in mine)})")
PY
