#!/usr/bin/env bash
# The seed's read table on this machine: its four queries over COUNT log
# rows loaded through the real pipeline (`logpipe up` + `logpipe generate`),
# through logpipe's query API (HTTP, JSON answer included) and through
# DuckDB with 2 threads on the same Parquet files (hive partitioning).
# Each query runs once to warm up, then RUNS times: min and median, and
# the answers are checked equal across the two (counts exactly, figures to
# 0.1 %).
#
#   count      SELECT count(*)
#   group by   per service and level: count
#   order by   the 100 newest rows (timestamp DESC LIMIT 100), all columns
#   aggregate  per service and hour: rows, error rate, approximate p95
#              latency
#
# Usage: bench/seed_read.sh [COUNT=5000000] [RUNS=5]
# Env:   LOGPIPE_BIN (default: the release build), BENCH_PYTHON (with duckdb;
#        default $HOME/.cache/logpipe/venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-5000000}
RUNS=${2:-5}
. bench/lib.sh
DATA=$WORK/data

load_logs "$DATA" "$COUNT" --spread-days 1
FILES=$(find "$DATA/logs/raw" -name '*.parquet' | wc -l)
BYTES=$(du -sb "$DATA/logs/raw" | cut -f1)

"$PY" - "$URL" "$DATA/logs/raw" "$RUNS" "$COUNT" "$FILES" "$BYTES" <<'PY'
import json, statistics, sys, time, urllib.request
import duckdb

url, root, runs, count, files, size = sys.argv[1:]
runs = int(runs)
# (name, logpipe's SQL, DuckDB's SQL): the same question in each dialect.
QUERIES = [
    ("count", "SELECT count(*) AS n FROM logs", "SELECT count(*) AS n FROM logs"),
    ("group by",
     "SELECT service, level, count(*) AS n FROM logs GROUP BY service, level ORDER BY service, level",
     "SELECT service, level, count(*) AS n FROM logs GROUP BY service, level ORDER BY service, level"),
    ("order by",
     "SELECT * FROM logs ORDER BY timestamp DESC, request_id LIMIT 100",
     "SELECT * FROM logs ORDER BY timestamp DESC, request_id LIMIT 100"),
    ("aggregate",
     "SELECT service, date_trunc('hour', timestamp) AS hour, count(*) AS n, "
     "avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate, "
     "approx_percentile_cont(response_time_ms, 0.95) AS p95 "
     "FROM logs GROUP BY 1, 2 ORDER BY 1, 2",
     "SELECT service, date_trunc('hour', timestamp) AS hour, count(*) AS n, "
     "avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate, "
     "approx_quantile(response_time_ms, 0.95) AS p95 "
     "FROM logs GROUP BY 1, 2 ORDER BY 1, 2"),
]

def logpipe(sql):
    body = json.dumps({"sql": sql, "max_rows": 100000}).encode()
    request = urllib.request.Request(url + "/api/query", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.load(answer)["rows"]

con = duckdb.connect()
con.sql("SET threads = 2")
con.sql(f"CREATE VIEW logs AS SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)")

def ddb(sql):
    relation = con.sql(sql)
    names = relation.columns
    return [dict(zip(names, row)) for row in relation.fetchall()]

def timed(run, sql):
    run(sql)  # warm
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        rows = run(sql)
        seconds.append(time.perf_counter() - began)
    return rows, min(seconds) * 1000, statistics.median(seconds) * 1000

def close(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 0.001 * max(abs(a), abs(b), 1e-9)
    return True  # times, strings: formats differ between the engines

print(f"{count} rows in {files} Parquet files ({int(size) / 2**20:.0f} MiB), {runs} warm runs each, 2 cores")
print("| query | logpipe API min / median ms | DuckDB (2 threads) min / median ms | rows |")
print("|---|---|---|---|")
for name, ours, theirs in QUERIES:
    a, a_min, a_med = timed(logpipe, ours)
    b, b_min, b_med = timed(ddb, theirs)
    assert len(a) == len(b), f"{name}: {len(a)} rows from logpipe, {len(b)} from DuckDB"
    for x, y in zip(a, b):
        for key in ("n", "error_rate", "service", "level"):
            if key in x and key in y and x[key] is not None and not close(x[key], y[key]) or (
                key in ("service", "level") and key in x and x.get(key) != y.get(key)):
                raise SystemExit(f"{name}: logpipe {x} vs DuckDB {y}")
    print(f"| {name} | {a_min:.1f} / {a_med:.1f} | {b_min:.1f} / {b_med:.1f} | {len(a)} |")
PY
stop_up
