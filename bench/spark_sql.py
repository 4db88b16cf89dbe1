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
import statistics
import sys
import time

from pyspark.sql import SparkSession

root, runs = sys.argv[1], int(sys.argv[2])
queries = json.load(sys.stdin)
spark = (
    SparkSession.builder.master("local[2]")
    .appName("seed-read")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
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
