#!/usr/bin/env bash
# What a heavy query costs ingest: bench/e2e.sh on a lake preloaded with
# PRELOAD log records, COUNT more records timed, four ways — no query, then
# the seed's GROUP BY posted to /api/query in a loop (one at a time) with
# the query threads at each `query.priority`: idle (the default), low
# (nice 10), normal. Each way runs REPEAT times.
#
# Usage: bench/query_isolation.sh [COUNT=2000000] [PRELOAD=2000000] [REPEAT=2]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-2000000}
PRELOAD=${2:-2000000}
REPEAT=${3:-2}
SQL="SELECT service, level, count(*) AS n, avg(response_time_ms) AS avg_ms FROM logs GROUP BY service, level ORDER BY n DESC"
run() {
  local name=$1
  shift
  for i in $(seq "$REPEAT"); do
    echo "== $name ($i/$REPEAT)"
    env "$@" BENCH_PRELOAD="$PRELOAD" bench/e2e.sh "$COUNT" logs |
      grep -E '^(all in lake after|server CPU/record|queries meanwhile)'
  done
}
run "no query" BENCH_QUERY=
for priority in idle low normal; do
  run "query loop, query.priority = $priority" BENCH_QUERY="$SQL" LOGPIPE__QUERY__PRIORITY=$priority
done
