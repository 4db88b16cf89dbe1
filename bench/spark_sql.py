"""Spark SQL's column of bench/seed_read.sh: the seed's queries over the
lake's Parquet files (the plain Hive tree of `logs/raw`, partitions
inferred), as the seed's HDFS + Spark read them, on `local[2]`.

    python spark_sql.py ROOT RUNS < queries.json

queries.json is a list of [name, sql] with `logs` as the table. Each query
runs once to warm up, then RUNS times; one JSON line per query on stdout:
{"name", "min_ms", "median_ms", "rows": [...]} (rows as dicts, timestamps
as ISO strings).
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "spark"))
from logpipe_spark import session  # noqa: E402

root, runs = sys.argv[1], int(sys.argv[2])
queries = json.load(sys.stdin)
spark = session("seed-read", 2, log_level="ERROR")
spark.read.parquet(root).createOrReplaceTempView("logs")

for name, sql in queries:
    spark.sql(sql).collect()  # warm
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        rows = spark.sql(sql).collect()
        seconds.append(time.perf_counter() - began)
    out = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.asDict().items()} for row in rows]
    print(json.dumps({"name": name, "min_ms": min(seconds) * 1000, "rows": out,
                      "median_ms": statistics.median(seconds) * 1000}, default=float), flush=True)
spark.stop()
