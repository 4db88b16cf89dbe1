#!/usr/bin/env bash
# Every benchmark script at a tiny size, so none of them rots between the
# runs that measure (issue "faster than every stack"): each must exit 0 and
# print its result lines. Figures from here mean nothing (a debug binary,
# tiny loads); docs/BENCHMARKS.md holds the measured ones.
#
# Usage: bench/smoke.sh
# Env:   LOGPIPE_BIN (scripts/test.sh passes the debug binary the tests
#        built, so no release build is needed), and the LOGPIPE_TEST_*
#        services scripts/test.sh prepared (versitygw, Kafka, Spark, MariaDB,
#        PostgreSQL).
#
# Left out: bench/sizing.sh (the container image; the deploy tests build
# and run it) and bench/cdc.sh (MariaDB + Kafka Connect + PostgreSQL, several
# minutes even at a tiny size; the CDC tests run the same paths).
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
# run NAME EXPECTED_TEXT COMMAND…: runs a script, keeps its output, checks
# that it printed EXPECTED_TEXT.
run() {
  local name=$1 expected=$2
  shift 2
  local started=$SECONDS out
  out=$(mktemp)
  if "$@" >"$out" 2>&1 && grep -q -- "$expected" "$out"; then
    printf '  ok    %-28s %4ds\n' "$name" $((SECONDS - started))
  else
    printf '  FAIL  %-28s %4ds\n' "$name" $((SECONDS - started))
    sed 's/^/        /' "$out" | tail -n 40
    failed+=("$name")
  fi
  rm -f "$out"
}

run "e2e.sh" "records/s" bench/e2e.sh 5000 logs 500 2
run "e2e.sh events" "records/s" bench/e2e.sh 5000 events 500 2
run "e2e.sh on S3" "records/s" env BENCH_LAKE=s3 bench/e2e.sh 5000 logs 500 2
run "e2e.sh on HDFS" "records/s" env BENCH_LAKE=hdfs bench/e2e.sh 5000 logs 500 2
run "e2e.sh on Kafka" "records/s" env BENCH_BUS=kafka bench/e2e.sh 5000 logs 500 2
run "compare.sh" "median" bench/compare.sh "$LOGPIPE_BIN" "$LOGPIPE_BIN" 1 5000
run "daily.sh" "report" bench/daily.sh 20000 1
run "seed_read.sh" "aggregate" env BENCH_POSTGRES_URL="${LOGPIPE_TEST_POSTGRES_URL:-}" bench/seed_read.sh 20000 1
run "seed_write.sh" "Spark Structured Streaming → Parquet | unpaced" env BENCH_KAFKA=1 BENCH_POSTGRES_URL="${LOGPIPE_TEST_POSTGRES_URL:-}" \
  bench/seed_write.sh 1 0.01
run "sizing_hosts.sh" "| load | worker2" env SECONDS_PER_PHASE=2 LOAD_COUNT=5000 bench/sizing_hosts.sh
run "query_isolation.sh" "idle" bench/query_isolation.sh 5000 5000 1
run "backfill.sh" "Spark" bench/backfill.sh 20000 2
run "freshness.sh" "ack → queryable" bench/freshness.sh 2000 3
run "soak.sh" "round 1" bench/soak.sh 1 2000 2000
run "transactions.sh" "median" bench/transactions.sh 1 5000 2

if [ ${#failed[@]} -gt 0 ]; then
  echo "bench scripts that failed: ${failed[*]}" >&2
  exit 1
fi
