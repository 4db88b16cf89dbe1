"""The seed's write table, driven by bench/seed_write.sh (which starts the
servers): stepped loads into logpipe and into PostgreSQL, on the same rows.

    seed_write.py --logpipe URL --logpipe-pid PID --bin LOGPIPE --lake DIR
                  --postgres DSN [--seconds S] [--scale X] [--label NAME]
    seed_write.py --logpipe URL --logpipe-pid PID --bin LOGPIPE --hot-store DSN
                  (logpipe running with [postgres.hot] into DSN)

logpipe first: `logpipe generate --rate R` for S seconds per step, /api/stats
sampled every 50 ms (records accepted, rows committed to the lake) for the
end-to-end latency. Then the very rows logpipe's lake holds are read back
(DuckDB) and written into PostgreSQL at the same steps, two ways: INSERT
batches (psycopg's executemany in pipeline mode: the statements of a batch
sent together with one sync, as JDBC's addBatch/executeBatch sends them) and
COPY, 1,000 rows per transaction, 4 connections, as logpipe generate sends
1,000 records per request with 4 in flight.

Per target and step it prints one table row: the rate sustained, the latency
of an acknowledgement (a request answered; a transaction committed) p50/p99,
the latency from acknowledgement to readable p50/p99 (logpipe: until the
lake's committed rows cover it; PostgreSQL: a committed row is readable, so
0), the server's CPU (CPU seconds from the step's start until its rows were
readable: in cores over that time, and per row) and its peak memory during
the step (logpipe, brokers, Spark: peak RSS, reset before each step;
PostgreSQL: the peak of its processes' summed PSS, which counts shared
buffers once and includes those touched by earlier steps, COPY's by the
INSERT run before it), and the load client's CPU in cores (`logpipe generate`; for
PostgreSQL this Python process, psycopg's C code doing the encoding): on 2
cores a client near a whole core limits the step as much as the server.
"""

import argparse
import os
import resource
import re
import subprocess
import sys
import threading
import time
import json
import urllib.request

# The seed's steps, rows per minute (its Phase 1 and 2 tables), then one
# unpaced step (None: as fast as acknowledgements come, as many rows as the
# largest step) for each target's ceiling.
STEPS = [90_000, 900_000, 1_800_000, 3_600_000, 9_000_000, None]
BATCH = 1000
CONNECTIONS = 4
COLUMNS = [
    ("timestamp", "timestamptz NOT NULL"),
    ("level", "text NOT NULL"),
    ("service", "text NOT NULL"),
    ("host", "text"),
    ("message", "text NOT NULL"),
    ("request_id", "text"),
    ("response_time_ms", "double precision"),
    ("status_code", "integer"),
    ("endpoint", "text"),
    ("method", "text"),
    ("metadata_extra", "text"),
]
NAMES = ", ".join(name for name, _ in COLUMNS)
HZ = os.sysconf("SC_CLK_TCK")


def step_size(step, args):
    """(rows/s asked, or None unpaced; rows to send) of a step."""
    rate = max(1, round((step or STEPS[-2]) * args.scale / 60))
    return (rate if step else None), rate * args.seconds


def stat_fields(pid):
    """/proc/PID/stat after the command name (index 1: the parent, 11-14:
    utime, stime, cutime, cstime); None once the process is gone."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def ticks(pid):
    """utime + stime of a process, 0 once it is gone."""
    fields = stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def tree_ticks(parent):
    """CPU of `parent` and every process under it, including those that
    exited (their time is in the parent's cutime/cstime once reaped)."""
    fields = stat_fields(parent)
    if not fields:
        return 0
    return sum(int(f) for f in fields[11:15]) + sum(ticks(pid) for pid in children(parent))


def reset_peak(pid):
    """Starts VmHWM again from the current RSS (Linux: clear_refs 5), so a
    step's peak is its own."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as out:
            out.write("5")
    except OSError:
        pass


def peak_rss_kib(pid):
    return int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


def children(parent):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(entry)
            if fields and int(fields[1]) == parent:
                pids.append(int(entry))
    return pids


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def quantile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Sampler(threading.Thread):
    """Calls `probe` every `interval` seconds until stopped: (time, value)."""

    def __init__(self, probe, interval):
        super().__init__(daemon=True)
        self.probe, self.interval = probe, interval
        self.samples, self.done = [], threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.samples.append((time.monotonic(), self.probe()))
            except Exception:
                pass
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()
        return self.samples


def readable_lag(samples):
    """From (time, (accepted, readable)) samples: for the records accepted
    between two samples, how long until the readable count covered them;
    p50 and p99 weighted by records."""
    lags = []
    previous = None
    j = 0
    for t, (accepted, _) in samples:
        if previous is not None and accepted > previous:
            while j < len(samples) and samples[j][1][1] < accepted:
                j += 1
            if j == len(samples):
                break
            lags.append((samples[j][0] - t, accepted - previous))
        previous = accepted
    if not lags:
        return float("nan"), float("nan")
    lags.sort()
    total = sum(weight for _, weight in lags)

    def at(q):
        seen = 0
        for lag, weight in lags:
            seen += weight
            if seen >= q * total:
                return lag
        return lags[-1][0]

    return at(0.5), at(0.99)


def cpu_seconds(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def row(target, step, wanted, count, seconds, ack, lag, cpu, busy, peak_mib, client):
    """One table row: `step` the seed's rows/min, `wanted` the rows/s asked,
    `seconds` from the step's start to its last acknowledgement, `cpu` the
    server's CPU seconds over `busy` (the step until its rows were
    readable). A step acknowledged on schedule counts as its whole scheduled time (its last
    request leaves before the end), so the rate sustained is at most the
    rate asked."""
    rate = count / max(seconds, count / wanted if wanted else 0)
    asked = f"{step:,}" if step else "unpaced"
    share = f" ({rate / wanted:.0%})" if wanted else ""
    if os.environ.get("SEED_RESULTS"):
        with open(os.environ["SEED_RESULTS"], "a") as out:
            out.write(json.dumps({"target": target, "step": step, "rows_per_min": rate * 60,
                                  "asked_per_min": wanted * 60 if wanted else None,
                                  "readable_p99_ms": lag[1], "ack_p99_ms": ack[1], "cores": cpu / busy,
                                  "peak_mib": peak_mib}) + "\n")
    print(
        f"| {target} | {asked} | {rate * 60:,.0f}{share} | "
        f"{ack[0]:.1f} / {ack[1]:.1f} | {lag[0]:.0f} / {lag[1]:.0f} | {cpu / busy:.2f} / {cpu / count * 1e6:.1f} | "
        f"{peak_mib:.0f} | "
        f"{client / seconds:.2f} |",
        flush=True,
    )


def generate_steps(args, steps, url, pids, stats, label, what, patience, postmaster=None):
    """Each step through `logpipe generate` against `url`; `stats()` gives
    (records accepted, records readable); the step ends when every one of
    its records is readable (or after `patience` seconds: an error naming
    `what`). `pids`: the server's processes; `postmaster`: a PostgreSQL
    server whose CPU (all its processes) and memory (summed PSS, as in
    `postgres_steps`) count too."""
    base = stats()[1]
    for step in steps:
        rate, count = step_size(step, args)
        sampler = Sampler(stats, 0.05)
        sampler.start()
        for pid in pids:
            reset_peak(pid)
        if postmaster:
            pg_pids = [postmaster] + children(postmaster)
            pg_before = tree_ticks(postmaster)
            pg_memory = Sampler(lambda: pss_kib(pg_pids), 0.2)
            pg_memory.start()
        began = time.monotonic()
        before = {pid: ticks(pid) for pid in pids}
        client = cpu_seconds(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [args.bin, "generate", "--target", url, "--count", str(count),
             "--batch-size", str(BATCH), "--concurrency", str(CONNECTIONS)] + (["--rate", str(rate)] if rate else []),
            capture_output=True, text=True, check=True,
        ).stdout
        acked = time.monotonic()
        client = cpu_seconds(resource.RUSAGE_CHILDREN) - client
        deadline = acked + patience
        while stats()[1] < base + count:
            if time.monotonic() > deadline:
                sys.exit(f"{what}: {stats()[1]} rows readable after {patience} s, {base + count} sent")
            time.sleep(0.02)
        done = time.monotonic()
        time.sleep(0.1)
        samples = sampler.stop()
        base += count
        latency = re.search(r"ack latency p50 ([\d.]+) ms, p99 ([\d.]+) ms", out)
        ack = (float(latency.group(1)), float(latency.group(2))) if latency else (float("nan"),) * 2
        lag = readable_lag(samples)
        cpu = sum(ticks(pid) - before[pid] for pid in pids) / HZ
        rss = sum(peak_rss_kib(pid) for pid in pids)
        if postmaster:
            cpu += (tree_ticks(postmaster) - pg_before) / HZ
            rss += max((value for _, value in pg_memory.stop()), default=0)
        row(label, step, rate, count, acked - began, ack,
            (lag[0] * 1000, lag[1] * 1000), cpu, done - began, rss / 1024, client)


def logpipe_steps(args, steps):
    """logpipe: readable once in the lake (`lake_rows` of /api/stats)."""
    def stats():
        with urllib.request.urlopen(args.logpipe + "/api/stats", timeout=5) as answer:
            body = json.load(answer)
        return body["records_accepted"], body["lake_rows"]

    extra = [int(pid) for pid in (args.server_pids or "").split(",") if pid]
    generate_steps(args, steps, args.logpipe, [args.logpipe_pid] + extra, stats, args.label, "logpipe", 120)


def spark_steps(args, steps):
    """The seed's path: `logpipe collector` (the backend) → Kafka → Spark
    Structured Streaming → Parquet. Readable: rows Spark has committed
    (bench/spark_stream.py's progress file). Server: the collector, the
    broker(s) and Spark's JVM, CPU and peak RSS summed."""
    def committed():
        rows = 0
        for line in open(args.spark_progress):
            parts = line.split()
            if len(parts) == 2:
                rows = int(parts[1])
        return rows

    def stats():
        with urllib.request.urlopen(args.spark + "/api/stats", timeout=5) as answer:
            accepted = json.load(answer)["records_accepted"]
        return accepted, committed()

    pids = [int(pid) for pid in args.server_pids.split(",") if pid]
    generate_steps(args, steps, args.spark, pids, stats,
                   "collector → Kafka → Spark Structured Streaming → Parquet", "Spark", 300)


def hot_store_steps(args, steps):
    """logpipe with `[postgres.hot]` on (the lake job still runs): readable
    once committed in PostgreSQL (`logpipe_hot_rows_written_total` of
    /metrics counts rows after their transaction commits). Server: logpipe
    and every PostgreSQL process. At the end, every row sent must be in
    `seed_hot.logs` once; the schema is dropped after."""
    import psycopg

    def written():
        with urllib.request.urlopen(args.logpipe + "/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith('logpipe_hot_rows_written_total{table="logs"}'):
                    return int(float(line.split()[-1]))
        return 0

    def stats():
        with urllib.request.urlopen(args.logpipe + "/api/stats", timeout=5) as answer:
            accepted = json.load(answer)["records_accepted"]
        return accepted, written()

    with psycopg.connect(args.hot_store, autocommit=True) as con:
        backend = con.execute("SELECT pg_backend_pid()").fetchone()[0]
        postmaster = int(stat_fields(backend)[1])
    generate_steps(args, steps, args.logpipe, [args.logpipe_pid], stats,
                   "logpipe + hot store (PostgreSQL, COPY)", "the hot store", 120, postmaster)
    with psycopg.connect(args.hot_store, autocommit=True) as con:
        rows, ids = con.execute(
            f"SELECT count(*), count(DISTINCT request_id) FROM {HOT_SCHEMA}.logs").fetchone()
        con.execute(f"DROP SCHEMA {HOT_SCHEMA} CASCADE")
    sent = sum(step_size(step, args)[1] for step in steps)
    if rows != sent or ids != sent:
        sys.exit(f"the hot store holds {rows} rows ({ids} distinct request ids), {sent} sent")


# The hot store's schema in the benchmark (seed_write.sh drops it before).
HOT_SCHEMA = "seed_hot"

LAKES = {}


def lake_rows(lake, offset, count):
    """Rows `offset` to `offset + count` of the lake's logs in (timestamp,
    request_id) order: the lake is read and sorted once (in DuckDB, which
    keeps a table's insertion order), then sliced for each step."""
    import duckdb

    if lake not in LAKES:
        con = duckdb.connect()
        con.sql("SET threads = 2")
        con.sql(
            f"CREATE TABLE seed AS SELECT {NAMES} FROM read_parquet('{lake}/logs/raw/**/*.parquet', "
            "hive_partitioning = false) ORDER BY timestamp, request_id"
        )
        LAKES[lake] = con
    return LAKES[lake].sql(f"SELECT * FROM seed LIMIT {count} OFFSET {offset}").fetchall()


def postgres_steps(args, steps, mode):
    import psycopg

    with psycopg.connect(args.postgres, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS seed_logs")
        # The seed's entity: an identity key and the record's fields.
        con.execute(
            "CREATE TABLE seed_logs (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
            + ", ".join(f"{name} {kind}" for name, kind in COLUMNS) + ")"
        )
        backend = con.execute("SELECT pg_backend_pid()").fetchone()[0]
        postmaster = int(stat_fields(backend)[1])
    insert = f"INSERT INTO seed_logs ({NAMES}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    offset = 0
    for step in steps:
        rate, count = step_size(step, args)
        rows = lake_rows(args.lake, offset, count)
        offset += count
        if len(rows) < count:
            sys.exit(f"the lake holds {offset - count + len(rows)} rows, {offset} needed")
        batches = [rows[i:i + BATCH] for i in range(0, count, BATCH)]
        connections = [psycopg.connect(args.postgres) for _ in range(CONNECTIONS)]
        lock, next_batch, latencies, client = threading.Lock(), [0], [], [0.0]

        def load(con):
            cur = con.cursor()
            cpu = time.thread_time()
            while True:
                with lock:
                    i = next_batch[0]
                    next_batch[0] += 1
                if i >= len(batches):
                    with lock:
                        client[0] += time.thread_time() - cpu
                    return
                if rate:
                    pause = began + i * BATCH / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                sent = time.monotonic()
                if mode == "copy":
                    with cur.copy(f"COPY seed_logs ({NAMES}) FROM STDIN") as copy:
                        for record in batches[i]:
                            copy.write_row(record)
                else:
                    cur.executemany(insert, batches[i])
                con.commit()
                with lock:
                    latencies.append(time.monotonic() - sent)

        # The postmaster, its background processes and the backends of
        # these connections, all running now.
        pids = [postmaster] + children(postmaster)
        before = tree_ticks(postmaster)
        memory = Sampler(lambda: pss_kib(pids), 0.2)
        memory.start()
        began = time.monotonic()
        threads = [threading.Thread(target=load, args=(con,)) for con in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done = time.monotonic()
        cpu = (tree_ticks(postmaster) - before) / HZ
        peak = max((value for _, value in memory.stop()), default=0)
        for con in connections:
            con.close()
        if len(latencies) != len(batches):
            sys.exit(f"PostgreSQL {mode}: {len(latencies)} of {len(batches)} batches committed")
        ms = [seconds * 1000 for seconds in latencies]
        row(f"PostgreSQL {'COPY' if mode == 'copy' else 'INSERT batches'}", step, rate, count, done - began, (quantile(ms, 0.5), quantile(ms, 0.99)), (0, 0), cpu, done - began, peak / 1024, client[0])
    with psycopg.connect(args.postgres, autocommit=True) as con:
        stored = con.execute("SELECT count(*) FROM seed_logs").fetchone()[0]
        con.execute("DROP TABLE seed_logs")
    if stored != offset:
        sys.exit(f"PostgreSQL {mode}: {stored} rows stored, {offset} written")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--logpipe")
    parser.add_argument("--logpipe-pid", type=int)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--lake")
    parser.add_argument("--postgres")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--label", default="logpipe (embedded bus)")
    parser.add_argument("--spark", help="the seed's path instead: the collector's URL")
    parser.add_argument("--spark-progress")
    parser.add_argument("--hot-store", help="logpipe runs [postgres.hot] into this PostgreSQL: its steps only")
    parser.add_argument("--server-pids", help="more server processes (brokers; Spark's JVM) whose CPU and peak RSS count")
    args = parser.parse_args()
    steps = STEPS
    if args.spark:
        spark_steps(args, steps)
        return
    if args.hot_store:
        hot_store_steps(args, steps)
        return
    print(f"The seed's steps x {args.scale:g}, {args.seconds} s each; {BATCH:,} rows per request or "
          f"transaction, {CONNECTIONS} in flight; latencies in ms; CPU of the server only")
    print("| target | step (rows/min) | sustained rows/min (of the step) | ack p50 / p99 | "
          "ack → readable p50 / p99 | server CPU: cores / µs per row | server peak memory (MiB) | client CPU (cores) |")
    print("|---|---|---|---|---|---|---|---|")
    logpipe_steps(args, steps)
    if args.postgres:
        postgres_steps(args, steps, "insert")
        postgres_steps(args, steps, "copy")


if __name__ == "__main__":
    main()
