#!/usr/bin/env bash
# End-to-end ingest benchmark: from the first POST to the last row committed
# to the lake, driven by `logpipe generate`, plus peak RSS of `logpipe up`.
#
# Usage: bench/e2e.sh [COUNT=2000000] [KIND=logs] [BATCH=1000] [CONCURRENCY=4]
# Env:   LOGPIPE_BIN (default: release build in $CARGO_TARGET_DIR), any
#        LOGPIPE__… configuration variable for the server under test.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-2000000}
KIND=${2:-logs}
BATCH=${3:-1000}
CONCURRENCY=${4:-4}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logpipe/target}"
BIN=${LOGPIPE_BIN:-$CARGO_TARGET_DIR/release/logpipe}
if [ ! -x "$BIN" ]; then
  echo "building the release binary (once)…" >&2
  cargo build --release --locked -p logpipe-cli >&2
fi

WORK=$(mktemp -d)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" up --no-generator --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 100); do grep -q '^listening on ' "$WORK/out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$WORK/out")
[ -n "$URL" ] || { echo "logpipe up did not start:" >&2; cat "$WORK/err" >&2; exit 1; }

stat() { curl -sf "$URL/api/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

START=$(date +%s.%N)
/usr/bin/env time -f 'GEN_CPU %U %S' "$BIN" generate --target "$URL" --count "$COUNT" --kind "$KIND" --batch-size "$BATCH" --concurrency "$CONCURRENCY" >"$WORK/gen" 2>&1
ACKED=$(date +%s.%N)
until [ "$(stat lake_rows)" -ge "$COUNT" ]; do sleep 0.02; done
DONE=$(date +%s.%N)
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
# utime + stime of `logpipe up`, in clock ticks (fields 14 and 15).
UP_TICKS=$(awk '{print $14 + $15}' "/proc/$PID/stat")
kill -TERM "$PID"; wait "$PID" || true; PID=

python3 - "$COUNT" "$START" "$ACKED" "$DONE" "$RSS_KB" "$WORK/gen" "$UP_TICKS" "$(getconf CLK_TCK)" <<'PY'
import sys
count, start, acked, done, rss_kb, gen, up_ticks, hz = sys.argv[1:]
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
PY
