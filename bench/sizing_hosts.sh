#!/usr/bin/env bash
# What each host of the seed's three-PC layout uses (deploy/compose/
# master-workers; docs/deployment.md "Sizing"), with the release binary and
# the real servers on this machine's loopback:
#   master   Apache Kafka (one KRaft node), the S3 lake (versitygw) and
#            `logpipe collector` (collector, query API, reports)
#   worker1  `logpipe stream --jobs raw,windows`
#   worker2  `logpipe stream --jobs raw`
# in three phases:
#   idle   no records, SECONDS_PER_PHASE seconds
#   seed   the seed's generator rate (100 logs every 5 s and 100 events
#          every 10 s: 20 logs/s + 10 events/s), SECONDS_PER_PHASE seconds
#   load   LOAD_COUNT logs from `logpipe generate` as fast as acknowledged
#          (4 connections), until the lake holds them all
# For each host and phase: CPU (mean over the phase, and the largest
# 1-second sample, % of one core) and peak memory (the hosts' processes'
# peak resident sets, VmHWM, reset at each phase's start, summed).
#
#   bench/sizing_hosts.sh            # SECONDS_PER_PHASE=30 LOAD_COUNT=1000000
#
# All three "hosts" and the load client share this machine's cores: the load
# phase's rate is what 2 cores give the whole layout, and each host's CPU
# there is its share of them, not what it would take alone.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_LAKE=s3
. bench/lib.sh
PHASE=${SECONDS_PER_PHASE:-30}
LOAD_COUNT=${LOAD_COUNT:-1000000}

WORKERS=()
hosts_cleanup() {
  set +e
  [ ${#WORKERS[@]} -eq 0 ] || { kill "${WORKERS[@]}"; wait "${WORKERS[@]}"; } 2>/dev/null
  cleanup
}
trap hosts_cleanup EXIT

start_kafka 1
export LOGPIPE__BUS__KIND=kafka LOGPIPE__BUS__KAFKA__BROKERS=$BROKERS \
  LOGPIPE__BUS__KAFKA__GROUP=sizing-hosts LOGPIPE__REPORTS__SCHEDULE=false

start_role collector "$WORK/master"
MASTER_PIDS="$PID,$S3_PID,$(cat "$KAFKA_DIR"/node*/pid | paste -sd, -)"

# worker NAME JOBS: `logpipe stream` with /metrics on a free port; prints
# its pid once it listens.
worker() {
  local name=$1 jobs=$2
  "$BIN" stream --jobs "$jobs" --listen 127.0.0.1:0 --data-dir "$WORK/$name" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
  local pid=$!
  for _ in $(seq 150); do grep -q 'listening on ' "$WORK/$name.out" 2>/dev/null && break; sleep 0.2; done
  grep -q 'listening on ' "$WORK/$name.out" || { echo "$name did not start:" >&2; cat "$WORK/$name.err" >&2; exit 1; }
  echo "$pid"
}
W1=$(worker worker1 raw,windows)
WORKERS+=("$W1")
W2=$(worker worker2 raw)
WORKERS+=("$W2")

WORKER_URLS=$(sed -n 's/^listening on //p' "$WORK/worker1.out" "$WORK/worker2.out" | paste -sd, -)

"$PY" - "$URL" "$WORKER_URLS" "$BIN" "$PHASE" "$LOAD_COUNT" "master=$MASTER_PIDS" "worker1=$W1" "worker2=$W2" <<'PY'
import subprocess, sys, time, urllib.request

url, worker_urls, binary = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
phase, load_count = int(sys.argv[4]), int(sys.argv[5])
hosts = {}
for arg in sys.argv[6:]:
    name, pids = arg.split("=")
    hosts[name] = [int(p) for p in pids.split(",") if p]


# /proc readers shared with the write table's script.
sys.path.insert(0, "bench")
from seed_write import HZ, children, peak_rss_kib, reset_peak, ticks  # noqa: E402


def family(pid):
    """The process and everything under it (a broker's JVM under its
    launcher), alive now."""
    return [pid] + [q for child in children(pid) for q in family(child)]


procs = {name: sorted({q for p in pids for q in family(p)}) for name, pids in hosts.items()}


def lake_logs():
    """Logs the workers have committed to the lake (their /metrics)."""
    total = 0
    for worker in worker_urls:
        with urllib.request.urlopen(worker + "/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith('logpipe_lake_rows_committed_total{table="logs"}'):
                    total += int(float(line.split()[-1]))
    return total


def measure(run, done):
    """Runs `run()` (starts the phase's load, returns a handle), samples every
    second until `done(handle, elapsed)`; per host: mean and max CPU (% of a
    core) and summed peak RSS (MiB)."""
    for pids in procs.values():
        for pid in pids:
            reset_peak(pid)
    first = {name: sum(ticks(p) for p in pids) for name, pids in procs.items()}
    last, peaks = dict(first), {name: 0.0 for name in procs}
    began = time.monotonic()
    handle = run()
    while True:
        time.sleep(1)
        for name, pids in procs.items():
            now = sum(ticks(p) for p in pids)
            peaks[name] = max(peaks[name], (now - last[name]) / HZ * 100)
            last[name] = now
        if done(handle, time.monotonic() - began):
            break
    elapsed = time.monotonic() - began
    return elapsed, {
        name: ((last[name] - first[name]) / HZ / elapsed * 100, peaks[name],
               sum(peak_rss_kib(p) for p in pids) / 1024)
        for name, pids in procs.items()
    }


def report(phase_name, elapsed, figures, note):
    for name, (mean, peak, rss) in figures.items():
        print(f"| {phase_name} | {name} | {mean:.1f} % | {peak:.0f} % | {rss:.0f} MiB | {note} |", flush=True)


print("| phase | host | CPU mean | CPU max (1 s) | peak memory | note |")
print("|---|---|---|---|---|---|")
time.sleep(3)
elapsed, figures = measure(lambda: None, lambda _, t: t >= phase)
report("idle", elapsed, figures, "no records")


def seed_rate():
    # The seed's generator: 100 logs every 5 s, 100 events every 10 s.
    return [subprocess.Popen([binary, "generate", "--target", url, "--kind", kind, "--count", str(rate * phase),
                              "--rate", str(rate), "--batch-size", "100", "--concurrency", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for kind, rate in (("logs", 20), ("events", 10))]


elapsed, figures = measure(seed_rate, lambda clients, t: all(c.poll() is not None for c in clients))
report("seed", elapsed, figures, "20 logs/s + 10 events/s")

base = lake_logs()
sent = {}


def load():
    sent["began"] = time.monotonic()
    return subprocess.Popen([binary, "generate", "--target", url, "--count", str(load_count),
                             "--batch-size", "1000", "--concurrency", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def loaded(client, t):
    if client.poll() is not None and "acked" not in sent:
        sent["acked"] = time.monotonic() - sent["began"]
    return "acked" in sent and lake_logs() >= base + load_count or t > 600


elapsed, figures = measure(load, loaded)
rows = lake_logs() - base
report("load", elapsed, figures,
       f"{load_count:,} logs acknowledged at {load_count / sent['acked']:,.0f}/s, all in the lake {elapsed:.1f} s after the first")
if rows < load_count:
    sys.exit(f"the lake holds {rows} of {load_count} records")
PY
