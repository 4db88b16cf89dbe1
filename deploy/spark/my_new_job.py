"""The seed's batch job (spark-jobs/batch/my_new_job.py) run by Spark over
logpipe's lake, next to logpipe's own `my_job` output read by Spark.

    python my_new_job.py LAKE_DIR YYYY-MM-DD OUT_DIR

The seed's logic unchanged: one day of logs, `groupBy("level").count()`,
written with mode overwrite (here under OUT_DIR). The last line printed is
JSON: {"seed": {level: count}, "logpipe": {level: count}}, the second read
by Spark from LAKE_DIR/results/my_job (a plain Hive tree, partition `date`).
The integration test (crates/logpipe-cli/tests/it/jobs.rs) checks both
equal.
"""

import json
import sys

from pyspark.sql import SparkSession


def main():
    lake, day, out = sys.argv[1:4]
    year, month, dom = (int(part) for part in day.split("-"))
    spark = (
        SparkSession.builder.appName("MyNewJob")
        .master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")

    # The seed read /data/logs/2024/01/15 from HDFS; logpipe's lake names
    # the same day year=/month=/day= (Hive partitions).
    df = spark.read.parquet(f"{lake}/logs/raw/year={year}/month={month}/day={dom}")
    result = df.groupBy("level").count()
    result.write.mode("overwrite").parquet(out)
    seed = {row["level"]: row["count"] for row in result.collect()}

    jobs = spark.read.parquet(f"{lake}/results/my_job")
    ours = {
        row["level"]: row["count"]
        for row in jobs.where(jobs["date"].cast("string") == day).collect()
    }
    spark.stop()
    print(json.dumps({"seed": seed, "logpipe": ours}))


if __name__ == "__main__":
    main()
