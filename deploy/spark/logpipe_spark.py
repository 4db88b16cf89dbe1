"""What logpipe's Spark scripts share: a local session bound to loopback,
the Kafka source's jars checked against pyspark's version, and the schema of
a log record on the bus (README "Records": the collector's canonical JSON,
`timestamp` as epoch seconds). Imported by read_logs_raw.py here and by
bench/spark_stream.py and bench/spark_sql.py.
"""
import glob
import os

import pyspark
from pyspark.sql import SparkSession
from pyspark.sql.functions import col, from_json, to_timestamp
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

LOG_METADATA = StructType([
    StructField("request_id", StringType()),
    StructField("response_time_ms", DoubleType()),
    StructField("status_code", IntegerType()),
    StructField("endpoint", StringType()),
    StructField("method", StringType()),
])
LOG_SCHEMA = StructType([
    StructField("timestamp", DoubleType()),
    StructField("level", StringType()),
    StructField("service", StringType()),
    StructField("host", StringType()),
    StructField("message", StringType()),
    StructField("metadata", LOG_METADATA),
])


def kafka_jars():
    """The jars of $SPARK_KAFKA_JARS, which must hold Spark's Kafka source
    at exactly pyspark's version (deploy/spark/pom.xml)."""
    jars = sorted(glob.glob(os.path.join(os.environ["SPARK_KAFKA_JARS"], "*.jar")))
    wanted = f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar"
    assert any(j.endswith(wanted) for j in jars), f"no {wanted} in {jars}: the jars must match pyspark"
    return jars


def session(app, cores, jars=(), log_level="WARN"):
    """A local Spark session on `cores` cores, driver on 127.0.0.1, no UI,
    UTC, one shuffle partition per core."""
    builder = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(cores))
        .config("spark.sql.session.timeZone", "UTC")
    )
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    return spark


def logs_stream(spark, bootstrap):
    """`logs.raw` from its first offset as a stream of parsed log records
    with their event time (`event_time`). Committed records only
    (`read_committed`): the collector writes each request in a Kafka
    transaction and aborts the transaction of a request it answers 503,
    which Spark's default (`read_uncommitted`) would read too."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", "logs.raw")
        .option("startingOffsets", "earliest")
        .option("kafka.isolation.level", "read_committed")
        .load()
        .select(from_json(col("value").cast("string"), LOG_SCHEMA).alias("log"))
        .select("log.*")
        .withColumn("event_time", to_timestamp(col("timestamp")))
    )
