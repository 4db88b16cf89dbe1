"""The seed's Spark job on logpipe's topics: Spark Structured Streaming reads
`logs.raw` from Kafka, parses each record with the documented schema (README,
"Records": the collector's canonical JSON, `timestamp` as epoch seconds) and
derives the event time as the seed's `raw_to_hdfs.py` did. It reads what the
topic holds now (`availableNow`) and prints one JSON line: how many records
have a `metadata.request_id` starting with PREFIX (`rows`), how many of those
did not parse (`unparsed`) and, with LOGPIPE_SPARK_IDS=1, the rows per
request_id (`ids`: what a test compares with the lake).

It reads committed records only (`kafka.isolation.level=read_committed`):
logpipe's collector writes each request in a Kafka transaction and aborts the
transaction of a request it answers 503, and Spark's default (Kafka's Java
consumer default, `read_uncommitted`) would read those aborted records too.

    SPARK_KAFKA_JARS=DIR SPARK_LOCAL_IP=127.0.0.1 python read_logs_raw.py BOOTSTRAP PREFIX [OUT_DIR]

With OUT_DIR it also writes them as Parquet partitioned by event hour, the
seed's HDFS layout (year=/month=/day=/hour=), which DuckDB, Spark and
logpipe's own lake tables all read the same way.

Jars: Spark's Kafka source at exactly pyspark's version (deploy/spark/pom.xml).
"""
import json
import os
import sys
import tempfile

from pyspark.sql.functions import col, dayofmonth, hour, month, year

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from logpipe_spark import kafka_jars, logs_stream, session  # noqa: E402

bootstrap, prefix = sys.argv[1], sys.argv[2]
out_dir = sys.argv[3] if len(sys.argv) > 3 else None
per_id = os.environ.get("LOGPIPE_SPARK_IDS") == "1"

spark = session("logpipe-read-logs-raw", 1, kafka_jars())

logs = logs_stream(spark, bootstrap).filter(col("metadata.request_id").startswith(prefix))

def each_batch(batch, batch_id):
    batch.persist()
    if out_dir:
        (batch.withColumn("year", year("event_time")).withColumn("month", month("event_time"))
         .withColumn("day", dayofmonth("event_time")).withColumn("hour", hour("event_time"))
         .write.mode("append").partitionBy("year", "month", "day", "hour").parquet(out_dir))
    counts = batch.selectExpr("count(*) AS rows", "count_if(event_time IS NULL OR level IS NULL) AS unparsed").first()
    totals["rows"] += counts["rows"]
    totals["unparsed"] += counts["unparsed"]
    if per_id:
        for row in batch.groupBy("metadata.request_id").count().collect():
            totals["ids"][row["request_id"]] = totals["ids"].get(row["request_id"], 0) + row["count"]
    batch.unpersist()

totals = {"rows": 0, "unparsed": 0}
if per_id:
    totals["ids"] = {}
query = (
    logs.writeStream.foreachBatch(each_batch)
    .option("checkpointLocation", tempfile.mkdtemp(prefix="logpipe-spark-checkpoint-"))
    .trigger(availableNow=True)
    .start()
)
query.awaitTermination()
print(json.dumps(totals))
spark.stop()
