"""Spark reading logpipe's lake where it lives (a directory, hdfs://…),
as the seed's Spark jobs read their HDFS: the plain Hive tree of
`logs/raw`, partitions inferred.

    SPARK_LOCAL_IP=127.0.0.1 python read_lake.py LAKE_URL

Prints one JSON line: the rows (`rows`), the distinct `metadata.request_id`
values (`ids`) and the rows per level (`levels`), which the HDFS lake's
test (crates/logpipe-cli/tests/it/lake_hdfs.rs) compares with what
logpipe's own SQL answers.
"""
import json
import sys

from pyspark.sql import SparkSession


def main():
    lake = sys.argv[1].rstrip("/")
    spark = (
        SparkSession.builder.appName("ReadLogpipeLake")
        .master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    logs = spark.read.parquet(f"{lake}/logs/raw")
    levels = {row["level"]: row["count"] for row in logs.groupBy("level").count().collect()}
    ids = logs.select("request_id").distinct().count()
    rows = logs.count()
    spark.stop()
    print(json.dumps({"rows": rows, "ids": ids, "levels": levels}))


if __name__ == "__main__":
    main()
