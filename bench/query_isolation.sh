#!/usr/bin/env bash
# What a heavy query costs ingest: bench/e2e.sh on a lake preloaded with
# PRELOAD log records, COUNT more records timed, five ways — no query, then
# the seed's GROUP BY posted to /api/query in a loop (one at a time) with
# the defaults (query threads at SCHED_IDLE, capped by
# query.max_share_under_load while ingest is busy), at SCHED_IDLE without
# the cap, and at normal priority without the cap; and, for comparison,
# no query but two busy loops at SCHED_IDLE in another process (what any
# work in ingest's idle gaps costs it, whatever its priority). Every round
# runs each way once, so a machine that drifts during the run drifts for
# all ways alike; REPEAT rounds.
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
  echo "== $name"
  env "$@" BENCH_PRELOAD="$PRELOAD" bench/e2e.sh "$COUNT" logs |
    grep -E '^(all in lake after|server CPU/record|queries meanwhile|busy loops took)'
}
for i in $(seq "$REPEAT"); do
  echo "#### round $i/$REPEAT"
  run "no query" BENCH_QUERY=
  run "query loop, defaults (idle, max_share_under_load = 0.1)" BENCH_QUERY="$SQL"
  run "query loop, idle, no cap" BENCH_QUERY="$SQL" LOGPIPE__QUERY__MAX_SHARE_UNDER_LOAD=0
  run "query loop, normal, no cap" BENCH_QUERY="$SQL" LOGPIPE__QUERY__PRIORITY=normal LOGPIPE__QUERY__MAX_SHARE_UNDER_LOAD=0
  run "no query, two busy loops at SCHED_IDLE in another process" BENCH_QUERY= BENCH_BUSY_LOOPS=2
done
