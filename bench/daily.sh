#!/usr/bin/env bash
# Daily report benchmark: loads COUNT logs of today (UTC) into a fresh lake
# through the real pipeline (`logpipe up` + `logpipe generate`), then times
# `logpipe batch daily --date TODAY` RUNS times (wall clock of the whole
# command, the report's own duration, peak RSS).
#
# Usage: bench/daily.sh [COUNT=5000000] [RUNS=5]
# Env:   LOGPIPE_BIN (default: release build in $CARGO_TARGET_DIR).
#        BENCH_SPREAD_DAYS=N stamps the logs evenly over the N days before
#        today (`logpipe generate --spread-days`) instead of now, so every
#        hour of them is closed (what compaction takes).
#        BENCH_COMPACT=1 runs `logpipe compact` over the loaded lake first
#        (every closed hour merged; the hour still open stays as it is).
#        BENCH_KEEP=DIR keeps the loaded data directory in DIR and reuses it
#        on the next run (skips the load when DIR/logs exists).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-5000000}
RUNS=${2:-5}
. bench/lib.sh
DATA=${BENCH_KEEP:-$WORK/data}

if [ ! -d "$DATA/logs" ]; then
  # Windows off: only the raw lake matters here, and the load is quicker.
  LOGPIPE__WINDOWS__ENABLED=false start_up "$DATA"
  echo "loading $COUNT logs…" >&2
  "$BIN" generate --target "$URL" --count "$COUNT" --kind logs \
    ${BENCH_SPREAD_DAYS:+--spread-days "$BENCH_SPREAD_DAYS"} >&2
  until [ "$(stat lake_rows)" -ge "$COUNT" ]; do sleep 0.1; done
  stop_up
fi

if [ -n "${BENCH_COMPACT:-}" ]; then
  /usr/bin/env time -f 'compaction: %e s wall, peak RSS %M KB' \
    "$BIN" compact --data-dir "$DATA" --min-age 0s --lookback 3650d --grace 0s
fi

# The day with the most rows (the load may cross midnight UTC).
read -r Y M D ROWS < <("$BIN" sql --data-dir "$DATA" --format csv \
  "SELECT year, month, day, count(*) AS n FROM logs GROUP BY year, month, day ORDER BY n DESC LIMIT 1" |
  tail -n +2 | tr ',' ' ')
DAY=$(printf '%04d-%02d-%02d' "$Y" "$M" "$D")
FILES=$(find "$DATA/logs" -name '*.parquet' -path "*/year=$Y/month=$M/day=$D/*" | wc -l)
BYTES=$(find "$DATA/logs" -name '*.parquet' -path "*/year=$Y/month=$M/day=$D/*" -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "day $DAY: $ROWS log rows in $FILES Parquet files ($((BYTES / 1024 / 1024)) MiB)"

for i in $(seq "$RUNS"); do
  /usr/bin/env time -f 'WALL %e RSS_KB %M' "$BIN" batch --data-dir "$DATA" daily --date "$DAY" \
    >"$WORK/run" 2>"$WORK/time" || { cat "$WORK/run" "$WORK/time" >&2; exit 1; }
  echo "run $i: $(cat "$WORK/run") | $(grep '^WALL' "$WORK/time")"
done | tee "$WORK/runs"

python3 - "$WORK/runs" <<'PY'
import re, statistics, sys
walls, inner, rss = [], [], []
for line in open(sys.argv[1]):
    inner.append(int(re.search(r"in (\d+) ms", line).group(1)))
    walls.append(float(re.search(r"WALL ([\d.]+)", line).group(1)))
    rss.append(int(re.search(r"RSS_KB (\d+)", line).group(1)) / 1024)
print(f"median: {statistics.median(walls):.2f} s wall (whole command), "
      f"{statistics.median(inner)} ms report, peak RSS {statistics.median(rss):.0f} MiB "
      f"(range {min(walls):.2f}–{max(walls):.2f} s)")
PY
