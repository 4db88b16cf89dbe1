#!/usr/bin/env bash
# Backfill benchmark (issue "jobs of your own"): COUNT logs spread over the
# DAYS whole UTC days before today are loaded through the real pipeline
# (`logpipe up` + `logpipe generate --spread-days`), then one batch job —
# per day and service: count, errors, mean and exact p95 latency — is
# backfilled over every day by three engines on the same Parquet files:
#
#   logpipe  `logpipe jobs run bench_daily --from D1 --to DN --force`
#   DuckDB   the same SQL per day, `COPY … TO` one Parquet file per day
#   Spark    the same SQL per day (pyspark 4.2.0, local[2]), one Parquet
#            directory per day
#
# Each is timed as a whole command (wall clock, peak RSS of its process
# tree: Spark's JVM included); the results are
# checked equal across the three (counts exactly, figures to 0.001).
#
# Usage: bench/backfill.sh [COUNT=5000000] [DAYS=30]
# Env:   LOGPIPE_BIN (default: the release build), BENCH_PYTHON (with duckdb;
#        default $HOME/.cache/logpipe/venv/bin/python), BENCH_SPARK_PYTHON
#        (with pyspark; default $HOME/.cache/logpipe/spark-venv-4.2.0/bin/python;
#        `none` skips Spark). BENCH_KEEP=DIR keeps the loaded lake in DIR and
#        reuses it (skips the load when DIR/logs exists).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-5000000}
DAYS=${2:-30}
. bench/lib.sh
DATA=${BENCH_KEEP:-$WORK/data}

if [ ! -d "$DATA/logs" ]; then
  load_logs "$DATA" "$COUNT" --spread-days "$DAYS"
  stop_up
fi
FIRST=$(date -u -d "$DAYS days ago" +%F)
LAST=$(date -u -d "1 day ago" +%F)
FILES=$(find "$DATA/logs" -name '*.parquet' | wc -l)
MIB=$(( $(find "$DATA/logs" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}') / 1024 / 1024 ))
echo "lake: $COUNT logs from $FIRST to $LAST in $FILES Parquet files ($MIB MiB)"

# The job: one SQL text; the engines differ only in how a day is named.
SQL_BODY="SELECT service, count(*) AS count,
       sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS errors,
       round(avg(response_time_ms), 3) AS avg_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms), 3) AS p95_ms
FROM logs
WHERE year = {year} AND month = {month} AND day = {day}
GROUP BY service"
mkdir -p "$WORK/jobs"
printf -- '-- name: bench_daily\n-- period: day\n-- output: results/bench_daily\n%s\n' "$SQL_BODY" >"$WORK/jobs/bench_daily.sql"
printf '%s\n' "$SQL_BODY" >"$WORK/job.sql"

# treerss PID: the peak, over the life of PID, of the summed RSS of PID
# and its descendants (Spark's JVM is a child of its Python driver), in KiB,
# sampled every 50 ms.
treerss() {
  python3 - "$1" <<'PY'
import os, sys, time
root, peak = int(sys.argv[1]), 0
def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []
while os.path.exists(f"/proc/{root}"):
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except OSError:
            pass
        todo += children(pid)
    peak = max(peak, total)
    time.sleep(0.05)
print(peak)
PY
}

timed() { # timed NAME COMMAND…: wall clock and peak RSS (process tree) of one command
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/env time -f %M -o "$WORK/maxrss.$name" "$@" >"$WORK/out.$name" 2>"$WORK/err.$name" &
  local pid=$!
  treerss "$pid" >"$WORK/rss.$name" &
  local sampler=$!
  wait "$pid" || { echo "$name failed:" >&2; cat "$WORK/err.$name" >&2; exit 1; }
  end=$(date +%s.%N)
  wait "$sampler"
  # The larger of the sampled tree and the kernel's peak of the command
  # itself (a short run may end between two samples).
  local tree own
  tree=$(cat "$WORK/rss.$name")
  own=$(tail -n 1 "$WORK/maxrss.$name")
  printf '%-8s %7.2f s  %6d MiB peak RSS\n' "$name" "$(echo "$end - $start" | bc)" $(( (tree > own ? tree : own) / 1024 ))
}

echo "backfill of $DAYS days ($FIRST … $LAST):"
timed logpipe env LOGPIPE__JOBS__DIR="$WORK/jobs" "$BIN" jobs run bench_daily \
  --data-dir "$DATA" --from "$FIRST" --to "$LAST" --force

cat >"$WORK/duckdb_backfill.py" <<'PY'
import datetime, os, sys, duckdb
data, first, last, sql, out = sys.argv[1:6]
con = duckdb.connect()
con.sql(f"CREATE VIEW logs AS SELECT * FROM read_parquet('{data}/logs/raw/**/*.parquet', hive_partitioning = true)")
day = datetime.date.fromisoformat(first)
while day <= datetime.date.fromisoformat(last):
    query = sql.replace("{year}", str(day.year)).replace("{month}", str(day.month)).replace("{day}", str(day.day))
    os.makedirs(f"{out}/date={day}", exist_ok=True)
    con.sql(f"COPY ({query}) TO '{out}/date={day}/part-0.parquet' (FORMAT parquet)")
    day += datetime.timedelta(days=1)
PY
timed duckdb "$PY" "$WORK/duckdb_backfill.py" "$DATA" "$FIRST" "$LAST" "$(cat "$WORK/job.sql")" "$WORK/duckdb"

if [ "$SPARK_PY" != none ]; then
  cat >"$WORK/spark_backfill.py" <<'PY'
import datetime, sys
from pyspark.sql import SparkSession
data, first, last, sql, out = sys.argv[1:6]
spark = (SparkSession.builder.appName("backfill").master("local[2]")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
         .config("spark.driver.memory", "2g").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
spark.read.parquet(f"{data}/logs/raw").createOrReplaceTempView("logs")
day = datetime.date.fromisoformat(first)
while day <= datetime.date.fromisoformat(last):
    query = sql.replace("{year}", str(day.year)).replace("{month}", str(day.month)).replace("{day}", str(day.day))
    spark.sql(query).coalesce(1).write.mode("overwrite").parquet(f"{out}/date={day}")
    day += datetime.timedelta(days=1)
spark.stop()
PY
  timed spark env SPARK_LOCAL_IP=127.0.0.1 "$SPARK_PY" "$WORK/spark_backfill.py" "$DATA" "$FIRST" "$LAST" "$(cat "$WORK/job.sql")" "$WORK/spark"
fi

# The three results, equal?
"$PY" - "$DATA/results/bench_daily" "$WORK/duckdb" "$WORK/spark" <<'PY'
import os, sys, duckdb
def load(path):
    if not os.path.isdir(path):
        return None
    rows = duckdb.sql(f"SELECT CAST(date AS VARCHAR), service, count, errors, avg_ms, p95_ms FROM "
                      f"read_parquet('{path}/**/*.parquet', hive_partitioning = true)").fetchall()
    return {(d, s): (c, e, a, p) for d, s, c, e, a, p in rows}
ours, duck, spark = (load(p) for p in sys.argv[1:4])
def same(a, b):
    return a.keys() == b.keys() and all(
        a[k][:2] == b[k][:2] and all(abs(x - y) <= 0.001 for x, y in zip(a[k][2:], b[k][2:])) for k in a)
print(f"results: {len(ours)} (day, service) rows; DuckDB {'equal' if same(ours, duck) else 'DIFFERENT'}"
      + ("" if spark is None else f"; Spark {'equal' if same(ours, spark) else 'DIFFERENT'}"))
if not same(ours, duck) or (spark is not None and not same(ours, spark)):
    sys.exit(1)
PY
