"""The seed's stream job for bench/seed_write.sh: Spark Structured Streaming
reads `logs.raw` from Kafka, parses each record (the collector's canonical
JSON, README "Records") and appends it as Parquet partitioned by event hour
(year=/month=/day=/hour=, the seed's HDFS layout) with Spark's file sink,
one micro-batch per TRIGGER (the seed's raw_to_hdfs ran on a processing-time
trigger). It runs until killed.

    SPARK_KAFKA_JARS=DIR python spark_stream.py BOOTSTRAP OUT_DIR PROGRESS_FILE [TRIGGER="1 second"]

After each micro-batch commits, one line is appended to PROGRESS_FILE: the
wall-clock time and the rows committed so far, which bench/seed_write.py
reads as "readable". The line `ready` is written once the query runs.
Spark runs `local[2]` with its default driver memory (1 GiB); the session
and the record's schema are deploy/spark/logpipe_spark.py's.
"""
import os
import sys
import time

from pyspark.sql.functions import dayofmonth, hour, month, year
from pyspark.sql.streaming import StreamingQueryListener

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "spark"))
from logpipe_spark import kafka_jars, logs_stream, session  # noqa: E402

bootstrap, out_dir, progress_file = sys.argv[1:4]
trigger = sys.argv[4] if len(sys.argv) > 4 else "1 second"
spark = session("seed-raw-to-parquet", 2, kafka_jars())

logs = (
    logs_stream(spark, bootstrap)
    .withColumn("year", year("event_time"))
    .withColumn("month", month("event_time"))
    .withColumn("day", dayofmonth("event_time"))
    .withColumn("hour", hour("event_time"))
)


class Progress(StreamingQueryListener):
    """Appends `time rows-so-far` after each committed micro-batch."""

    def __init__(self):
        self.rows = 0

    def onQueryStarted(self, event):
        pass

    def onQueryProgress(self, event):
        self.rows += event.progress.numInputRows
        with open(progress_file, "a") as out:
            out.write(f"{time.time():.3f} {self.rows}\n")

    def onQueryIdle(self, event):
        pass

    def onQueryTerminated(self, event):
        pass


spark.streams.addListener(Progress())
query = (
    logs.writeStream.format("parquet")
    .option("path", out_dir)
    .option("checkpointLocation", out_dir + "-checkpoint")
    .partitionBy("year", "month", "day", "hour")
    .trigger(processingTime=trigger)
    .start()
)
with open(progress_file, "a") as out:
    out.write("ready\n")
query.awaitTermination()
