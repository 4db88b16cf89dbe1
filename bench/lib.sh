# Shared by the bench scripts (sourced, not run): the release binary, a
# work directory cleaned up on exit, and starting `logpipe up` on a free
# port. Sets BIN and WORK; `start_up` sets PID and URL.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logpipe/target}"
BIN=${LOGPIPE_BIN:-$CARGO_TARGET_DIR/release/logpipe}
if [ ! -x "$BIN" ]; then
  echo "building the release binary (once)…" >&2
  cargo build --release --locked -p logpipe-cli >&2
fi

# BENCH_PIN=1: the server on CPU 0 and the load client on CPU 1, so the
# server's CPU per record is not inflated by the two competing for cores
# (compare costs this way; throughput is then that of one core).
SERVER_PIN=()
CLIENT_PIN=()
if [ -n "${BENCH_PIN:-}" ]; then
  SERVER_PIN=(taskset -c 0)
  CLIENT_PIN=(taskset -c 1)
fi

WORK=$(mktemp -d)
# Everything a script started, stopped on exit however it ends: without
# `set -e` here, one step that fails (a process already gone) does not skip
# the rest.
cleanup() {
  set +e
  [ -n "${SPARK_PID:-}" ] && kill "$SPARK_PID" ${SPARK_JVM:-} 2>/dev/null
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null
  [ -n "${S3_PID:-}" ] && kill "$S3_PID" 2>/dev/null
  [ -n "${KAFKA_DIR:-}" ] && deploy/kafka/kafka.sh stop "$KAFKA_DIR" 2>/dev/null
  [ -n "${HDFS_DIR:-}" ] && deploy/hdfs/hdfs.sh stop "$HDFS_DIR" >/dev/null 2>&1
  [ -n "${PG_DIR:-}" ] && as_pg "$PG_BIN/pg_ctl -D '$PG_DIR/data' -m fast stop" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

# BENCH_LAKE=s3: the lake on a versitygw S3 server (the one scripts/test.sh
# builds) serving $WORK/s3 on a free loopback port, through lake.root.
if [ "${BENCH_LAKE:-local}" = s3 ]; then
  VERSITYGW=${LOGPIPE_TEST_VERSITYGW:-$HOME/.cache/logpipe/tools/go/versitygw}
  [ -x "$VERSITYGW" ] || { echo "BENCH_LAKE=s3 needs versitygw at $VERSITYGW (./scripts/test.sh builds it)" >&2; exit 1; }
  S3_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/s3/logpipe"
  "$VERSITYGW" --port "127.0.0.1:$S3_PORT" --access bench --secret bench-secret posix "$WORK/s3" >"$WORK/s3.log" 2>&1 &
  S3_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && break; sleep 0.1; done
  export LOGPIPE__LAKE__ROOT=s3://logpipe/lake LOGPIPE__LAKE__S3__ENDPOINT="http://127.0.0.1:$S3_PORT" \
    LOGPIPE__LAKE__S3__REGION=us-east-1 LOGPIPE__LAKE__S3__ACCESS_KEY_ID=bench \
    LOGPIPE__LAKE__S3__SECRET_ACCESS_KEY=bench-secret
fi

# BENCH_LAKE=hdfs: the lake in a MiniDFSCluster (deploy/hdfs/hdfs.sh, one
# NameNode and one DataNode in a JVM on loopback, data in $WORK/hdfs).
if [ "${BENCH_LAKE:-local}" = hdfs ]; then
  HDFS_DIR=$WORK/hdfs
  HDFS_URL=$(deploy/hdfs/hdfs.sh start "$HDFS_DIR" | tail -n 1)
  export LOGPIPE__LAKE__ROOT="$HDFS_URL/lake"
fi

# start_kafka NODES: a fresh Apache Kafka cluster of NODES (1 or 3) KRaft
# nodes on free loopback ports (deploy/kafka/kafka.sh), stopped on exit;
# sets BROKERS and KAFKA_DIR.
start_kafka() {
  local nodes=$1 port
  # Node n listens on PORT+10(n-1) and the two ports after it: pick a base
  # below the ephemeral range with every one of them free.
  port=$(python3 - "$nodes" <<'PY'
import random, socket, sys
nodes = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 32000)
    try:
        for port in [base + 10 * n + k for n in range(nodes) for k in range(3)]:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(base)
    break
else:
    sys.exit("no free ports for the Kafka nodes")
PY
)
  KAFKA_DIR=$WORK/kafka
  BROKERS=$(deploy/kafka/kafka.sh start "$KAFKA_DIR" "$nodes" "$port" | tail -n 1)
}

# start_postgres: PG_URL, BENCH_POSTGRES_URL when set, otherwise a
# throwaway PostgreSQL 15 cluster (Debian's, default settings: fsync and
# synchronous_commit on) on a free loopback port, deleted on exit.
PG_BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }
start_postgres() {
  PG_URL=${BENCH_POSTGRES_URL:-}
  [ -z "$PG_URL" ] || return 0
  [ -x "$PG_BIN/postgres" ] || { echo "PostgreSQL 15 is not installed (apt-get install postgresql), or set BENCH_POSTGRES_URL" >&2; exit 1; }
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/pg"
  # initdb refuses to run as root: the cluster belongs to `postgres` then.
  [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$WORK/pg" "$WORK"
  # The C locale: text sorts by bytes, as the other engines sort it.
  as_pg "$PG_BIN/initdb -D '$WORK/pg/data' -A trust -U postgres --locale=C --encoding=UTF8" >/dev/null
  PG_DIR=$WORK/pg
  as_pg "$PG_BIN/pg_ctl -D '$WORK/pg/data' -l '$WORK/pg/log' -w -o \"-p $port -k '$WORK/pg' -c listen_addresses=127.0.0.1\" start" >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# start_role ROLE DATA_DIR [ARGS…]: `logpipe ROLE` (up, collector) on
# 127.0.0.1:0; sets PID and URL once it listens.
start_role() {
  local role=$1 data=$2
  shift 2
  "${SERVER_PIN[@]}" "$BIN" "$role" --listen 127.0.0.1:0 --data-dir "$data" "$@" >"$WORK/out" 2>"$WORK/err" &
  PID=$!
  for _ in $(seq 100); do grep -q '^listening on ' "$WORK/out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^listening on //p' "$WORK/out")
  [ -n "$URL" ] || { echo "logpipe $role did not start:" >&2; cat "$WORK/err" >&2; exit 1; }
}

# start_up DATA_DIR [ARGS…]: `logpipe up --no-generator` on 127.0.0.1:0.
start_up() {
  local data=$1
  shift
  start_role up "$data" --no-generator "$@"
}

# The Python with DuckDB that scripts/test.sh installs (BENCH_PYTHON: another).
PY=${BENCH_PYTHON:-$HOME/.cache/logpipe/venv/bin/python}
# pyspark 4.2.0's venv scripts/test.sh makes (BENCH_SPARK_PYTHON: another;
# `none` leaves Spark out where a script allows it).
SPARK_PY=${BENCH_SPARK_PYTHON:-$HOME/.cache/logpipe/spark-venv-4.2.0/bin/python}

# load_logs DATA_DIR COUNT [GENERATE_ARGS…]: `logpipe up` on DATA_DIR (no
# windows, no scheduled reports), COUNT logs from `logpipe generate`, and
# a wait until the lake holds them all; the server keeps running.
load_logs() {
  local data=$1 count=$2
  shift 2
  LOGPIPE__WINDOWS__ENABLED=false LOGPIPE__REPORTS__SCHEDULE=false start_up "$data"
  echo "loading $count logs…" >&2
  "$BIN" generate --target "$URL" --count "$count" --kind logs "$@" >&2
  until [ "$(stat lake_rows)" -ge "$count" ]; do sleep 0.2; done
}

# stat NAME: one figure of the running server's /api/stats.
stat() { curl -sf "$URL/api/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# stop_up: SIGTERM and wait (the server drains and commits).
stop_up() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
