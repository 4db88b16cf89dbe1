#!/usr/bin/env bash
# Ack → queryable: how long after the collector acknowledged a record the
# query API returns it, under a steady background load (issue "faster than
# every stack": p99 ≤ 1 s at half of the maximum load).
#
# `logpipe up` (release, embedded bus) takes RATE logs/s from `logpipe
# generate --rate` for SECONDS seconds. Meanwhile a probe posts one log every
# 100 ms (one request, its own connection) and notes when it was
# acknowledged, and a watcher asks the query API every 20 ms which probes it
# can see. Probe logs are stamped in an hour of 2020 that no other record
# uses, so the watcher's query reads only that partition and costs the
# server next to nothing. A probe's freshness = first seen − acknowledged;
# the watcher's 20 ms period is the resolution.
#
# Usage: bench/freshness.sh [RATE=130000] [SECONDS=30]
# Env:   LOGPIPE_BIN, LOGPIPE__… (e.g. LOGPIPE__LAKE__FLUSH_INTERVAL=500ms),
#        BENCH_LAKE=s3|hdfs as in bench/e2e.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-130000}
SECONDS_OF_LOAD=${2:-30}
. bench/lib.sh

LOGPIPE__WINDOWS__ENABLED=false LOGPIPE__REPORTS__SCHEDULE=false start_up "$WORK/data"
"${CLIENT_PIN[@]}" "$BIN" generate --target "$URL" --count $((RATE * SECONDS_OF_LOAD)) --kind logs \
  --rate "$RATE" --batch-size 1000 --concurrency 4 >"$WORK/gen" 2>&1 &
GEN=$!

python3 - "$URL" "$SECONDS_OF_LOAD" <<'PY'
import json, sys, threading, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
acked, seen = {}, {}
stop = threading.Event()

def post(path, body):
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, answer.read()

def probe():
    n = 0
    began = time.time()
    while time.time() - began < seconds:
        rid = f"probe-{n:06d}"
        stamp = f"2020-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z"
        log = {"timestamp": stamp, "level": "INFO", "service": "probe", "host": "bench",
               "message": "freshness probe", "metadata": {"request_id": rid}}
        status, _ = post("/api/collect/logs", [log])
        if status == 200:
            acked[rid] = time.time()
        n += 1
        time.sleep(0.1)
    # Until every acknowledged probe was seen, or 30 s.
    deadline = time.time() + 30
    while time.time() < deadline and any(r not in seen for r in list(acked)):
        time.sleep(0.05)
    stop.set()

def watch():
    sql = "SELECT request_id FROM logs WHERE year = 2020 AND month = 1 AND day = 1 AND hour = 0"
    while not stop.is_set():
        began = time.time()
        _, body = post("/api/query", {"sql": sql})
        now = time.time()
        for row in json.loads(body).get("rows", []):
            rid = row["request_id"]
            seen.setdefault(rid, now)
        time.sleep(max(0.0, 0.02 - (now - began)))

threads = [threading.Thread(target=probe), threading.Thread(target=watch)]
for t in threads:
    t.start()
for t in threads:
    t.join()
lags = sorted(seen[r] - acked[r] for r in acked if r in seen)
missing = [r for r in acked if r not in seen]
if not lags:
    print("no probe was seen", file=sys.stderr)
    sys.exit(1)
def pct(p):
    return lags[min(len(lags) - 1, int(p / 100 * len(lags)))] * 1000
print(f"probes             {len(acked)} acknowledged, {len(lags)} seen, {len(missing)} never seen")
print(f"ack → queryable    p50 {pct(50):.0f} ms, p99 {pct(99):.0f} ms, max {lags[-1] * 1000:.0f} ms")
sys.exit(1 if missing else 0)
PY
wait "$GEN" || true
awk '/records\/s|acked/ {print "background load    " $0}' "$WORK/gen" | tail -n 2
