#!/usr/bin/env bash
# The kill -9 soak: ROUNDS rounds of load from `logpipe generate` against
# `logpipe up` (embedded bus), each with a kill -9 of the server at a random
# moment of the load and a restart on the same address; the load client
# retries through the outage as the 503 and the refused connections tell it
# to (with its Idempotency-Key). After every round:
#   - every acknowledged record is in the lake exactly once (rows = records
#     acknowledged so far, and no request_id twice), and
#   - the window job counted every lake row once (sum of the window counts
#     plus the late records = rows).
# A round that breaks either stops the soak, keeping the data directory.
#
# Usage: bench/soak.sh [ROUNDS=10] [RECORDS_PER_ROUND=20000] [RATE=10000]
# SOAK_BUS=kafka: the scaled-out layout instead, on a fresh one-node Apache
# Kafka (deploy/kafka/kafka.sh, transactions on): a `logpipe collector` and
# a `logpipe stream --jobs raw,windows`, and each round kills one of the two
# at random (the other keeps running).
# Loopback only; bounded: ROUNDS × RECORDS_PER_ROUND records, each round
# at most a few seconds of load plus the checks' waits (60 s at most each).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-10}
PER_ROUND=${2:-20000}
RATE=${3:-10000}
. bench/lib.sh

# A fixed port (below the ephemeral range) so the client's retries reach
# the restarted server.
free_port() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    port = random.randrange(20000, 32000)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
PY
}
# Fixed ports (below the ephemeral range) so the client's retries reach
# the restarted process.
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
DATA="$WORK/data"
# Windows close 1 s after their records stop, so each round's are counted.
export LOGPIPE__WINDOWS__IDLE_CLOSE=1s

BUS=${SOAK_BUS:-embedded}
ROLES=(up)
if [ "$BUS" = kafka ]; then
  start_kafka 1
  export LOGPIPE__BUS__KIND=kafka LOGPIPE__BUS__KAFKA__BROKERS=$BROKERS LOGPIPE__BUS__KAFKA__TRANSACTIONS=true
  STREAM_PORT=$(free_port)
  STREAM_URL="http://127.0.0.1:$STREAM_PORT"
  ROLES=(collector stream)
else
  STREAM_URL=$URL
fi
declare -A PIDS
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; cleanup' EXIT

# start ROLE: runs it and waits until it answers /health.
start() {
  local role=$1 url args
  case $role in
    up) args=(up --no-generator --listen "127.0.0.1:$PORT"); url=$URL ;;
    collector) args=(collector --listen "127.0.0.1:$PORT"); url=$URL ;;
    stream) args=(stream --jobs raw,windows --listen "127.0.0.1:$STREAM_PORT"); url=$STREAM_URL ;;
  esac
  "$BIN" "${args[@]}" --data-dir "$DATA" >>"$WORK/out" 2>>"$WORK/err" &
  PIDS[$role]=$!
  for _ in $(seq 300); do
    curl -sf "$url/health" >/dev/null 2>&1 && return 0
    kill -0 "${PIDS[$role]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "logpipe $role did not start:" >&2
  tail -n 30 "$WORK/err" >&2
  exit 1
}

sql() { "$BIN" sql --data-dir "$DATA" --format csv "$1" | tail -n 1; }
late() { curl -sf "$STREAM_URL/metrics" | awk '/^logpipe_window_late_records_total /{print int($2)}'; }

fail() {
  local keep
  keep=$(mktemp -d /tmp/logpipe-soak.XXXXXX)
  cp -r "$DATA" "$WORK/err" "$keep/" 2>/dev/null || true
  echo "round $round FAILED: $*; data and log kept in $keep" >&2
  exit 1
}

for role in "${ROLES[@]}"; do start "$role"; done
acked=0
kills=0
started=$SECONDS
for round in $(seq "$ROUNDS"); do
  "$BIN" generate --target "$URL" --count "$PER_ROUND" --rate "$RATE" --batch-size 500 \
    --concurrency 2 --retry-for-secs 120 >"$WORK/gen" 2>&1 &
  GEN=$!
  after=$(python3 -c "import random; print(round(random.uniform(0.2, $PER_ROUND / $RATE), 2))")
  sleep "$after"
  victim=${ROLES[$((RANDOM % ${#ROLES[@]}))]}
  kill -9 "${PIDS[$victim]}"
  wait "${PIDS[$victim]}" 2>/dev/null || true
  kills=$((kills + 1))
  sleep "$(python3 -c 'import random; print(round(random.uniform(0, 1), 2))')"
  start "$victim"
  wait "$GEN" || fail "the load client did not get every record acknowledged: $(tail -n 3 "$WORK/gen")"
  acked=$((acked + PER_ROUND))

  rows=0 ids=0 windowed=0 late_n=0
  for _ in $(seq 120); do
    read -r rows ids < <(sql "SELECT count(*), count(DISTINCT request_id) FROM logs" | tr ',' ' ')
    windowed=$(sql "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM windows")
    late_n=$(late)
    [ "$rows" -ge "$acked" ] && [ $((windowed + late_n)) -ge "$rows" ] && break
    sleep 0.5
  done
  [ "$rows" = "$acked" ] || fail "the lake holds $rows rows, $acked records were acknowledged"
  [ "$ids" = "$rows" ] || fail "$((rows - ids)) rows of the lake are second copies"
  [ $((windowed + late_n)) = "$rows" ] || fail "windows count $windowed and $late_n late, the lake $rows"
  echo "round $round: kill -9 of $victim after ${after}s of load; lake $rows rows = acknowledged, no doubles; windows $windowed + late $late_n = lake"
done
echo "soak ($BUS): $ROUNDS rounds, $kills kill -9, $acked records acknowledged, each in the lake once and counted once by the window job ($((SECONDS - started)) s)"
for role in "${ROLES[@]}"; do kill -TERM "${PIDS[$role]}" 2>/dev/null; wait "${PIDS[$role]}" 2>/dev/null || true; done
