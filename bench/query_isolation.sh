#!/usr/bin/env bash
# What a heavy query costs ingest: bench/e2e.sh on a lake preloaded with
# PRELOAD log records, COUNT more records timed, three ways — no query;
# the seed's GROUP BY posted to /api/query in a loop with the query
# threads at their default priority (query.nice = 10); the same loop with
# query.nice = 0 (the query competes as an equal).
#
# Usage: bench/query_isolation.sh [COUNT=2000000] [PRELOAD=2000000]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-2000000}
PRELOAD=${2:-2000000}
SQL="SELECT service, level, count(*) AS n, avg(response_time_ms) AS avg_ms FROM logs GROUP BY service, level ORDER BY n DESC"
run() {
  echo "== $1"
  shift
  env "$@" BENCH_PRELOAD="$PRELOAD" bench/e2e.sh "$COUNT" logs |
    grep -E '^(all acked after|all in lake after|server CPU/record|queries meanwhile)'
}
run "no query" BENCH_QUERY=
run "query loop, query.nice = 10 (default)" BENCH_QUERY="$SQL"
run "query loop, query.nice = 0" BENCH_QUERY="$SQL" LOGPIPE__QUERY__NICE=0
