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
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null
  [ -n "${S3_PID:-}" ] && kill "$S3_PID" 2>/dev/null
  [ -n "${KAFKA_DIR:-}" ] && deploy/kafka/kafka.sh stop "$KAFKA_DIR" 2>/dev/null
  [ -n "${HDFS_DIR:-}" ] && deploy/hdfs/hdfs.sh stop "$HDFS_DIR" >/dev/null 2>&1
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

# start_up DATA_DIR [ARGS…]: `logpipe up --no-generator` on 127.0.0.1:0.
start_up() {
  local data=$1
  shift
  "${SERVER_PIN[@]}" "$BIN" up --no-generator --listen 127.0.0.1:0 --data-dir "$data" "$@" >"$WORK/out" 2>"$WORK/err" &
  PID=$!
  for _ in $(seq 100); do grep -q '^listening on ' "$WORK/out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^listening on //p' "$WORK/out")
  [ -n "$URL" ] || { echo "logpipe up did not start:" >&2; cat "$WORK/err" >&2; exit 1; }
}

# The Python with DuckDB that scripts/test.sh installs (BENCH_PYTHON: another).
PY=${BENCH_PYTHON:-$HOME/.cache/logpipe/venv/bin/python}

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
