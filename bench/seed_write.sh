#!/usr/bin/env bash
# The seed's write table on this machine: its stepped loads (90 k, 900 k,
# 1.8 M, 3.6 M and 9 M rows/min) for SECONDS each into logpipe (`logpipe up`,
# embedded bus, `logpipe generate --rate`), then the same rows, read back
# from logpipe's lake, into PostgreSQL as INSERT batches (what the seed's
# JDBC batch sent) and with COPY. One table row per target and step: rate
# sustained, ack and ack → readable latency p50/p99, server CPU and peak
# memory (bench/seed_write.py says how each is measured). Then logpipe with
# the PostgreSQL hot store on ([postgres.hot], docs/hot-store.md).
#
# Usage: bench/seed_write.sh [SECONDS=10] [SCALE=1]
#   SCALE multiplies every step (0.01: a tiny run).
# The table is drawn as a PNG too (bench/plot_seed.py): BENCH_PLOT=FILE keeps it.
# Env:   LOGPIPE_BIN (default: the release build), BENCH_PYTHON (with duckdb
#        and psycopg; default $HOME/.cache/logpipe/venv/bin/python, which
#        scripts/test.sh installs),
#        BENCH_POSTGRES_URL: a PostgreSQL to write into; otherwise a
#        throwaway PostgreSQL 15 cluster (Debian's, default settings: fsync
#        and synchronous_commit on) on a free loopback port, deleted on exit,
#        BENCH_KAFKA=1: also the steps through Apache Kafka, on a fresh
#        one-node cluster (deploy/kafka/kafka.sh) or BENCH_BROKERS=HOST:PORT:
#        `logpipe up --bus kafka`, then the seed's own path, `logpipe
#        collector` (its backend) → Kafka → Spark Structured Streaming →
#        Parquet (bench/spark_stream.py; pyspark 4.2.0 and the Kafka source
#        jars scripts/test.sh installs: BENCH_SPARK_PYTHON, BENCH_SPARK_JARS).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_STEP=${1:-10}
SCALE=${2:-1}
. bench/lib.sh

start_postgres
export SEED_RESULTS=$WORK/results.jsonl

LOGPIPE__WINDOWS__ENABLED=false LOGPIPE__REPORTS__SCHEDULE=false start_up "$WORK/data"
"$PY" bench/seed_write.py --logpipe "$URL" --logpipe-pid "$PID" --bin "$BIN" --lake "$WORK/data" \
  --postgres "$PG_URL" --seconds "$SECONDS_PER_STEP" --scale "$SCALE"
stop_up

# logpipe with the PostgreSQL hot store on ([postgres.hot]): the same steps,
# readable once committed in PostgreSQL, whose CPU and memory count too.
"$PY" -c 'import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute("DROP SCHEMA IF EXISTS seed_hot CASCADE")' "$PG_URL"
LOGPIPE__WINDOWS__ENABLED=false LOGPIPE__REPORTS__SCHEDULE=false LOGPIPE__POSTGRES__URL=$PG_URL \
  LOGPIPE__POSTGRES__HOT__ENABLED=true LOGPIPE__POSTGRES__HOT__SCHEMA=seed_hot start_up "$WORK/hot-data"
"$PY" bench/seed_write.py --logpipe "$URL" --logpipe-pid "$PID" --bin "$BIN" --hot-store "$PG_URL" \
  --seconds "$SECONDS_PER_STEP" --scale "$SCALE"
stop_up

# The pids of the brokers this script started, comma-separated.
broker_pids() { [ -z "${KAFKA_DIR:-}" ] || cat "$KAFKA_DIR"/node*/pid | paste -sd, -; }

SPARK_JARS=${BENCH_SPARK_JARS:-$HOME/.cache/logpipe/spark-kafka-4.2.0}
if [ -n "${BENCH_KAFKA:-}" ] && [ -z "${BENCH_BROKERS:-}" ] && [ ! -x "$SPARK_PY" ]; then
  echo "BENCH_KAFKA=1 needs pyspark 4.2.0 at $SPARK_PY (./scripts/test.sh installs it)" >&2
  exit 1
fi
if [ -n "${BENCH_KAFKA:-}" ]; then
  BROKERS=${BENCH_BROKERS:-}
  [ -n "$BROKERS" ] || start_kafka 1
  LOGPIPE__WINDOWS__ENABLED=false LOGPIPE__REPORTS__SCHEDULE=false \
    start_up "$WORK/kafka-data" --bus kafka --brokers "$BROKERS"
  # CPU and memory of a broker this script started count as the server's.
  LABEL="logpipe (Kafka bus${KAFKA_DIR:+; + broker})"
  "$PY" bench/seed_write.py --logpipe "$URL" --logpipe-pid "$PID" --bin "$BIN" --server-pids "$(broker_pids)" \
    --seconds "$SECONDS_PER_STEP" --scale "$SCALE" --label "$LABEL" | tail -n +4
  stop_up
fi

# The seed's path on a fresh broker (an empty `logs.raw`, the broker's cost
# counted): the collector alone, then Spark. Not on BENCH_BROKERS, whose
# topic already holds the rows above.
if [ -n "${BENCH_KAFKA:-}" ] && [ -n "${BENCH_BROKERS:-}" ]; then
  echo "the seed's Spark path runs on a broker of its own: left out with BENCH_BROKERS" >&2
elif [ -n "${BENCH_KAFKA:-}" ]; then
  deploy/kafka/kafka.sh stop "$KAFKA_DIR" >/dev/null
  rm -rf "$KAFKA_DIR"
  start_kafka 1
  start_role collector "$WORK/collector" --bus kafka --brokers "$BROKERS"
  SPARK_KAFKA_JARS=$SPARK_JARS SPARK_LOCAL_IP=127.0.0.1 "${SERVER_PIN[@]}" "$SPARK_PY" bench/spark_stream.py \
    "$BROKERS" "$WORK/spark-out" "$WORK/spark-progress" >"$WORK/spark.log" 2>&1 &
  SPARK_PID=$!
  for _ in $(seq 600); do grep -q '^ready' "$WORK/spark-progress" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$WORK/spark-progress" 2>/dev/null || { tail -n 30 "$WORK/spark.log" >&2; exit 1; }
  SPARK_JVM=$(pgrep -P "$SPARK_PID" java | head -n 1 || true)
  [ -n "$SPARK_JVM" ] || { echo "no Spark JVM under pid $SPARK_PID:" >&2; tail -n 30 "$WORK/spark.log" >&2; exit 1; }
  "$PY" bench/seed_write.py --spark "$URL" --spark-progress "$WORK/spark-progress" --bin "$BIN" \
    --server-pids "$PID,$SPARK_JVM,$(broker_pids)" --seconds "$SECONDS_PER_STEP" --scale "$SCALE"
  kill "$SPARK_PID" "$SPARK_JVM" 2>/dev/null || true
  wait "$SPARK_PID" 2>/dev/null || true
  SPARK_PID=
  stop_up
fi

"$PY" bench/plot_seed.py write "$SEED_RESULTS" "$WORK/seed_write.png"
[ -z "${BENCH_PLOT:-}" ] || cp "$WORK/seed_write.png" "$BENCH_PLOT"
