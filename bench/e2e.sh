#!/usr/bin/env bash
# End-to-end ingest benchmark: from the first POST to the last row committed
# to the lake, driven by `logpipe generate`, plus peak RSS of `logpipe up`.
#
# Usage: bench/e2e.sh [COUNT=2000000] [KIND=logs] [BATCH=1000] [CONCURRENCY=4]
# Env:   LOGPIPE_BIN (default: release build in $CARGO_TARGET_DIR), any
#        LOGPIPE__… configuration variable for the server under test.
#        BENCH_CONFIG=FILE passes `--config FILE` to `logpipe up`.
#        BENCH_PIN=1 pins the server to CPU 0 and the load client to CPU 1.
#        BENCH_LAKE=s3 puts the lake on a versitygw S3 server on loopback,
#        BENCH_LAKE=hdfs in a MiniDFSCluster (deploy/hdfs/hdfs.sh); their CPU
#        is the machine's too, and shows in the rate.
#        BENCH_BUS=kafka runs `logpipe up --bus kafka` against a broker
#        (LOGPIPE__BUS__KAFKA__TRANSACTIONS=false: without transactions;
#        bench/transactions.sh compares):
#        BENCH_BROKERS=HOST:PORT for one you run, otherwise a fresh Apache
#        Kafka cluster of BENCH_KAFKA_NODES (1 or 3, default 1) KRaft nodes
#        on free loopback ports (deploy/kafka/kafka.sh); with 3 nodes the
#        topics get replication factor 3 and min.insync.replicas 2.
#        BENCH_PRELOAD=N loads N records first, untimed (a lake to query).
#        BENCH_QUERY=SQL posts SQL to /api/query in a loop, one at a time,
#        while the timed records go in (bench/query_isolation.sh compares).
#        BENCH_BUSY_LOOPS=N runs N busy loops at SCHED_IDLE in another
#        process meanwhile (what any low-priority work costs ingest).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-2000000}
KIND=${2:-logs}
BATCH=${3:-1000}
CONCURRENCY=${4:-4}
. bench/lib.sh

BUS_ARGS=()
[ -n "${BENCH_CONFIG:-}" ] && BUS_ARGS+=(--config "$BENCH_CONFIG")
if [ "${BENCH_BUS:-embedded}" = kafka ]; then
  BROKERS=${BENCH_BROKERS:-}
  if [ -z "$BROKERS" ]; then
    NODES=${BENCH_KAFKA_NODES:-1}
    start_kafka "$NODES"
    if [ "$NODES" = 3 ]; then
      export LOGPIPE__BUS__KAFKA__REPLICATION_FACTOR=3 LOGPIPE__BUS__KAFKA__MIN_INSYNC_REPLICAS=2
    fi
  fi
  BUS_ARGS+=(--bus kafka --brokers "$BROKERS")
fi

start_up "$WORK/data" "${BUS_ARGS[@]}"

PRELOAD=${BENCH_PRELOAD:-0}
if [ "$PRELOAD" -gt 0 ]; then
  "$BIN" generate --target "$URL" --count "$PRELOAD" --kind "$KIND" --batch-size "$BATCH" --concurrency "$CONCURRENCY" >/dev/null 2>&1
  until [ "$(stat lake_rows)" -ge "$PRELOAD" ]; do sleep 0.1; done
fi
PRE_TICKS=$(awk '{print $14 + $15}' "/proc/$PID/stat")
if [ -n "${BENCH_QUERY:-}" ]; then
  # One query at a time until the file `stop` appears: each one's seconds.
  python3 - "$URL" "$BENCH_QUERY" "$WORK/stop" >"$WORK/queries" <<'PY' &
import json, os, sys, time, urllib.request
url, sql, stop = sys.argv[1:]
body = json.dumps({"sql": sql}).encode()
while not os.path.exists(stop):
    began = time.time()
    request = urllib.request.Request(url + "/api/query", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()
    print(f"{time.time() - began:.3f}", flush=True)
PY
  QUERY_PID=$!
fi

BUSY_PIDS=()
for _ in $(seq "${BENCH_BUSY_LOOPS:-0}"); do
  # Stops at `stop`, or when the script's directory is gone (it ended early).
  chrt --idle 0 python3 -c '
import os, sys
while os.path.isdir(os.path.dirname(sys.argv[1])) and not os.path.exists(sys.argv[1]):
    for _ in range(100000): pass' "$WORK/stop" &
  BUSY_PIDS+=($!)
done

START=$(date +%s.%N)
/usr/bin/env time -f 'GEN_CPU %U %S' "${CLIENT_PIN[@]}" "$BIN" generate --target "$URL" --count "$COUNT" --kind "$KIND" --batch-size "$BATCH" --concurrency "$CONCURRENCY" >"$WORK/gen" 2>&1
ACKED=$(date +%s.%N)
until [ "$(stat lake_rows)" -ge "$((PRELOAD + COUNT))" ]; do sleep 0.02; done
DONE=$(date +%s.%N)
BUSY_TICKS=0
for pid in "${BUSY_PIDS[@]}"; do
  BUSY_TICKS=$((BUSY_TICKS + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
done
touch "$WORK/stop"
[ -n "${QUERY_PID:-}" ] && { wait "$QUERY_PID" || true; }
for pid in "${BUSY_PIDS[@]}"; do wait "$pid" || true; done
# Kafka transactions and the appends they carried (0 0 without them).
TXNS=$(curl -sf "$URL/metrics" | awk '/^logpipe_bus_transactions_total\{outcome="committed"\}/ {t=$2} /^logpipe_bus_transaction_requests_total / {r=$2} END {print t+0, r+0}')
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
# utime + stime of `logpipe up`, in clock ticks (fields 14 and 15).
UP_TICKS=$(awk -v pre="$PRE_TICKS" '{print $14 + $15 - pre}' "/proc/$PID/stat")
BROKER_TICKS=0
for pidfile in ${KAFKA_DIR:+$KAFKA_DIR/node*/pid}; do
  BROKER_TICKS=$((BROKER_TICKS + $(awk '{print $14 + $15}' "/proc/$(cat "$pidfile")/stat")))
done
stop_up

touch "$WORK/queries"
python3 - "$COUNT" "$START" "$ACKED" "$DONE" "$RSS_KB" "$WORK/gen" "$UP_TICKS" "$(getconf CLK_TCK)" "$BROKER_TICKS" $TXNS "$WORK/queries" "$BUSY_TICKS" <<'PY'
import statistics, sys
count, start, acked, done, rss_kb, gen, up_ticks, hz, broker_ticks, txns, txn_appends, queries, busy_ticks = sys.argv[1:]
count = int(count); start, acked, done = float(start), float(acked), float(done)
lines = open(gen).read().strip().splitlines()
gen_cpu = sum(float(x) for l in lines if l.startswith('GEN_CPU') for x in l.split()[1:])
print("\n".join(l for l in lines if not l.startswith('GEN_CPU')))
print(f"records            {count}")
print(f"all acked after    {acked - start:.2f} s  ({count / (acked - start):,.0f} records/s acknowledged)")
print(f"all in lake after  {done - start:.2f} s  ({count / (done - start):,.0f} records/s end to end)")
print(f"lake lag at ack    {done - acked:.2f} s")
print(f"peak RSS (up)      {int(rss_kb) / 1024:.0f} MiB")
up_cpu = int(up_ticks) / int(hz)
print(f"CPU seconds        up {up_cpu:.1f} s ({up_cpu / (done - start):.2f} cores), generate {gen_cpu:.1f} s ({gen_cpu / (acked - start):.2f} cores)")
print(f"server CPU/record  {up_cpu / count * 1e6:.2f} µs")
if int(broker_ticks):
    broker_cpu = int(broker_ticks) / int(hz)
    print(f"broker CPU         {broker_cpu:.1f} s ({broker_cpu / (done - start):.2f} cores, {broker_cpu / count * 1e6:.2f} µs/record)")
if float(txns):
    print(f"transactions       {float(txns):.0f} committed, {float(txn_appends) / float(txns):.2f} requests each")
if int(busy_ticks):
    busy_cpu = int(busy_ticks) / int(hz)
    print(f"busy loops took    {busy_cpu / (done - start):.2f} cores")
seconds = [float(l) for l in open(queries).read().split()]
if seconds:
    print(f"queries meanwhile  {len(seconds)}, median {statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms")
PY
