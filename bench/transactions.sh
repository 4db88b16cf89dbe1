#!/usr/bin/env bash
# What Kafka transactions cost: bench/e2e.sh on Apache Kafka with one and
# three brokers, `bus.kafka.transactions` on and off, in turn, ROUNDS times;
# prints each run's figures and, per setting, the median of the rounds.
#
# Usage: bench/transactions.sh [ROUNDS=3] [COUNT=1000000] [CONCURRENCY=4]
#   CONCURRENCY: requests the load client keeps in flight; more of them
#   share a transaction (the group commit), as many clients would.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
COUNT=${2:-1000000}
CONCURRENCY=${3:-4}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

for round in $(seq "$ROUNDS"); do
  for nodes in 1 3; do
    for transactions in true false; do
      echo "== round $round: $nodes broker(s), transactions $transactions" >&2
      LOGPIPE__BUS__KAFKA__TRANSACTIONS=$transactions BENCH_BUS=kafka BENCH_KAFKA_NODES=$nodes \
        bench/e2e.sh "$COUNT" logs 1000 "$CONCURRENCY" | tee "$OUT/$nodes-$transactions-$round" >&2
    done
  done
done

python3 - "$OUT" "$ROUNDS" "$CONCURRENCY" <<'PY'
import re, statistics, sys
out, rounds, concurrency = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def figures(path):
    text = open(path).read()
    f = {}
    f["e2e"] = float(re.search(r"\(([\d,]+) records/s end to end\)", text).group(1).replace(",", ""))
    f["acked"] = float(re.search(r"\(([\d,]+) records/s acknowledged\)", text).group(1).replace(",", ""))
    m = re.search(r"ack latency p50 ([\d.]+) ms, p99 ([\d.]+) ms", text)
    f["p50"], f["p99"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"transactions\s+(\d+) committed, ([\d.]+) requests each", text)
    f["per_txn"] = float(m.group(2)) if m else None
    return f
print(f"\nmedians of {rounds} rounds, {concurrency} requests in flight:")
print("| brokers | transactions | end to end /s (rounds) | acknowledged/s | ack p50 / p99 | requests per transaction |")
print("|---|---|---|---|---|---|")
for nodes in (1, 3):
    for transactions in ("true", "false"):
        runs = [figures(f"{out}/{nodes}-{transactions}-{r}") for r in range(1, rounds + 1)]
        med = lambda key: statistics.median(r[key] for r in runs)
        per_txn = [r["per_txn"] for r in runs if r["per_txn"]]
        per_txn = f"{statistics.median(per_txn):.2f}" if per_txn else "—"
        e2e_rounds = ", ".join(f"{r['e2e'] / 1000:.1f}k" for r in runs)
        print(f"| {nodes} | {'on' if transactions == 'true' else 'off'} | "
              f"**{med('e2e'):,.0f}** ({e2e_rounds}) | {med('acked'):,.0f} | "
              f"{med('p50'):.1f} / {med('p99'):.1f} ms | {per_txn} |")
PY
