"""Spark reading logpipe's lake where it lives (a directory, hdfs://…),
as the seed's Spark jobs read their HDFS: the plain Hive tree of
`logs/raw`, partitions inferred.

    SPARK_LOCAL_IP=127.0.0.1 python read_lake.py LAKE_URL
    SPARK_DELTA_JARS=a.jar,b.jar python read_lake.py LAKE_URL --delta

With --delta it reads the table's Delta log (`[lake.delta]`) instead of
listing the tree: the jars of delta-pom.xml (delta-spark, delta-storage)
come from SPARK_DELTA_JARS.

Prints one JSON line: the rows (`rows`), the distinct `metadata.request_id`
values (`ids`) and the rows per level (`levels`), which the HDFS lake's
test (crates/logpipe-cli/tests/it/lake_hdfs.rs) compares with what
logpipe's own SQL answers.
"""
import json
import os
import sys

from pyspark.sql import SparkSession


def main():
    lake = sys.argv[1].rstrip("/")
    delta = "--delta" in sys.argv[2:]
    builder = (
        SparkSession.builder.appName("ReadLogpipeLake")
        .master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
    )
    if delta:
        builder = (
            builder.config("spark.jars", os.environ["SPARK_DELTA_JARS"])
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if delta:
        logs = spark.read.format("delta").load(f"{lake}/logs/raw")
    else:
        logs = spark.read.parquet(f"{lake}/logs/raw")
    levels = {row["level"]: row["count"] for row in logs.groupBy("level").count().collect()}
    ids = logs.select("request_id").distinct().count()
    rows = logs.count()
    spark.stop()
    print(json.dumps({"rows": rows, "ids": ids, "levels": levels}))


if __name__ == "__main__":
    main()
