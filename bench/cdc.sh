#!/usr/bin/env bash
# Change data capture end to end on this machine, in one run: MariaDB 10.11 →
# … → PostgreSQL 15, three ways, on the same data:
#   embedded   logpipe's source and sink in one process, the embedded bus
#   kafka      logpipe's source → Apache Kafka → logpipe's sink (one process)
#   debezium   Debezium's MariaDB connector on Kafka Connect → Apache Kafka →
#              logpipe's sink
# For each:
#   snapshot   ROWS rows copied: rows/s from start until the target has them
#   changes    CHANGES row updates (transactions of 10 rows, a stored
#              procedure) as fast as MariaDB takes them: changes/s from the
#              first update until the target equals the source, and the lag
#              of each row (target commit time minus source statement time)
#              p50 / p99 (a burst faster than any path drains: the lag is
#              the backlog); CPU seconds and peak RSS of logpipe (and of
#              the Connect JVM for debezium)
#   paced      PACED_SECONDS of changes at about 2,000 changes/s (200
#              transactions/s): the lag p50 / p99 of a pipeline keeping up
#
#   bench/cdc.sh                      # ROWS=200000 CHANGES=100000
#   MODES="embedded kafka" bench/cdc.sh
#
# Needs what scripts/test.sh installs: MariaDB, PostgreSQL 15, Java and Maven
# (Kafka, Connect and Debezium from Maven Central, cached).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROWS=${ROWS:-200000}
CHANGES=${CHANGES:-100000}
MODES=${MODES:-embedded kafka debezium}
PACED_SECONDS=${PACED_SECONDS:-10}
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
as_user() { if [ "$(id -u)" = 0 ]; then su "$1" -s /bin/sh -c "$2"; else sh -c "$2"; fi; }

# MariaDB with the binlog settings CDC needs, in UTC.
chmod 755 "$WORK"   # the mysql and postgres users reach their directories
MARIA=$WORK/maria
mkdir -p "$MARIA"
[ "$(id -u)" = 0 ] && chown mysql:mysql "$MARIA"
as_user mysql "mariadb-install-db --datadir=$MARIA/data --auth-root-authentication-method=normal --skip-test-db" >/dev/null
MARIA_PORT=$(port)
as_user mysql "mariadbd --no-defaults --datadir=$MARIA/data --socket=$MARIA/sock --port=$MARIA_PORT \
  --bind-address=127.0.0.1 --server-id=1 --log-bin=mysql-bin --binlog-format=ROW --binlog-row-image=FULL \
  --binlog-row-metadata=FULL --gtid-strict-mode=ON --default-time-zone=+00:00 \
  --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 --innodb-buffer-pool-size=256M \
  --pid-file=$MARIA/pid >$MARIA/log 2>&1 &"
maria() { mariadb --socket="$MARIA/sock" -uroot --batch --skip-column-names "$@"; }
for _ in $(seq 100); do maria -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
maria -e "CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdcpw';
  GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, LOCK TABLES, BINLOG MONITOR ON *.* TO 'cdc'@'%';"

# PostgreSQL, a throwaway cluster.
PG=$WORK/pg
mkdir -p "$PG"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PG"
PG_PORT=$(port)
as_user postgres "/usr/lib/postgresql/15/bin/initdb -D $PG/data -A trust -U postgres" >/dev/null
as_user postgres "/usr/lib/postgresql/15/bin/pg_ctl -D $PG/data -l $PG/log -w -o '-p $PG_PORT -k $PG -c listen_addresses=127.0.0.1 -c fsync=off -c timezone=UTC' start" >/dev/null
psql_() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -A -t "$@"; }

stop_services() {
  maria -e 'SHUTDOWN' 2>/dev/null || true
  as_user postgres "/usr/lib/postgresql/15/bin/pg_ctl -D $PG/data -m immediate stop" >/dev/null 2>&1 || true
  [ -n "${CONNECT_PID:-}" ] && kill "$CONNECT_PID" 2>/dev/null
  cleanup
}
trap stop_services EXIT

# Kafka and Connect only when a mode needs them.
if [[ " $MODES " == *" kafka "* || " $MODES " == *" debezium "* ]]; then
  KAFKA_DIR=$WORK/kafka
  BROKERS=$(deploy/kafka/kafka.sh start "$KAFKA_DIR" 1 "$(port)" | tail -n 1)
  if [[ " $MODES " == *" debezium "* ]]; then
    CONNECT=$(deploy/kafka/kafka.sh connect "$KAFKA_DIR" "$(port)" | tail -n 1)
    CONNECT_PID=$(cat "$KAFKA_DIR/connect/pid")
  fi
fi

# The source table, fresh for each mode, and the churn procedure.
fresh_source() {
  maria -e "DROP DATABASE IF EXISTS car; CREATE DATABASE car; USE car;
    CREATE TABLE bench (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(64), updated_at DATETIME(6) NOT NULL);
    INSERT INTO bench SELECT seq, 0, CONCAT('row ', seq), NOW(6) FROM seq_1_to_$ROWS;
    DELIMITER //
    CREATE PROCEDURE churn(n INT, rows_ INT) BEGIN
      DECLARE i INT DEFAULT 0;
      WHILE i < n DO
        START TRANSACTION;
        UPDATE bench SET v = v + 1, updated_at = NOW(6) WHERE id BETWEEN (i * 10) % rows_ + 1 AND (i * 10) % rows_ + 10;
        COMMIT;
        SET i = i + 1;
      END WHILE;
    END //
    CREATE PROCEDURE pace(n INT, rows_ INT) BEGIN
      DECLARE i INT DEFAULT 0;
      WHILE i < n DO
        START TRANSACTION;
        UPDATE bench SET v = v + 1, updated_at = NOW(6) WHERE id BETWEEN (i * 10 + rows_ DIV 2) % rows_ + 1 AND (i * 10 + rows_ DIV 2) % rows_ + 10;
        COMMIT;
        DO SLEEP(0.005);
        SET i = i + 1;
      END WHILE;
    END //
    DELIMITER ;"
}

# The target with a trigger stamping each row's commit-side time.
fresh_target() {
  psql_ -c "DROP DATABASE IF EXISTS bench_$1" -c "CREATE DATABASE bench_$1" >/dev/null
  psql_ -d "bench_$1" -c "CREATE TABLE bench (id bigint PRIMARY KEY, v integer, note text, updated_at timestamp, applied_at timestamp);
    CREATE FUNCTION stamp() RETURNS trigger AS \$\$ BEGIN NEW.applied_at := clock_timestamp() AT TIME ZONE 'UTC'; RETURN NEW; END \$\$ LANGUAGE plpgsql;
    CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON bench FOR EACH ROW EXECUTE FUNCTION stamp();" >/dev/null
}

now() { date +%s.%N; }
cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_of() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }

RESULTS=$WORK/results
: >"$RESULTS"
for MODE in $MODES; do
  echo "== $MODE" >&2
  fresh_source
  fresh_target "$MODE"
  TARGET_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench_$MODE"
  CONFIG=$WORK/$MODE.toml
  case $MODE in
    embedded) BUS="" PREFIX=lp ;;
    kafka) BUS="[bus]
kind = \"kafka\"
[bus.kafka]
brokers = \"$BROKERS\"" PREFIX=lpk ;;
    debezium) BUS="[bus]
kind = \"kafka\"
[bus.kafka]
brokers = \"$BROKERS\"" PREFIX=dbz ;;
  esac
  SOURCE=""
  if [ "$MODE" != debezium ]; then
    SOURCE="[[cdc.sources]]
name = \"$PREFIX\"
url = \"mysql://cdc:cdcpw@127.0.0.1:$MARIA_PORT\"
server_id = 5402
tables = [\"car.bench\"]
partitions = 3"
  fi
  cat >"$CONFIG" <<EOF
$BUS
$SOURCE
[[cdc.sinks]]
name = "bench"
url = "$TARGET_URL"
topics = ["$PREFIX.car.bench"]
EOF
  STARTED=$(now)
  if [ "$MODE" = debezium ]; then
    curl -sf -X POST -H 'Content-Type: application/json' "$CONNECT/connectors" -d "{
      \"name\": \"bench-$$\", \"config\": {
        \"connector.class\": \"io.debezium.connector.mariadb.MariaDbConnector\", \"tasks.max\": \"1\",
        \"database.hostname\": \"127.0.0.1\", \"database.port\": \"$MARIA_PORT\",
        \"database.user\": \"cdc\", \"database.password\": \"cdcpw\", \"database.server.id\": \"5401\",
        \"topic.prefix\": \"$PREFIX\", \"database.include.list\": \"car\",
        \"schema.history.internal.kafka.bootstrap.servers\": \"$BROKERS\",
        \"schema.history.internal.kafka.topic\": \"schema-changes.$PREFIX\",
        \"topic.creation.default.replication.factor\": \"1\", \"topic.creation.default.partitions\": \"3\"}}" >/dev/null
  fi
  "${SERVER_PIN[@]}" "$BIN" cdc --config "$CONFIG" --data-dir "$WORK/data-$MODE" >"$WORK/$MODE.log" 2>&1 &
  PID=$!
  until [ "$(psql_ -d "bench_$MODE" -c 'SELECT count(*) FROM bench')" = "$ROWS" ]; do
    kill -0 "$PID" 2>/dev/null || { tail -n 30 "$WORK/$MODE.log" >&2; exit 1; }
    sleep 0.2
  done
  SNAPSHOT=$(python3 -c "print(f'{$ROWS / ($(now) - $STARTED):.0f}')")
  echo "  snapshot: $ROWS rows, $SNAPSHOT rows/s" >&2

  CPU0=$(cpu_of "$PID")
  JVM0=0
  [ "$MODE" = debezium ] && JVM0=$(cpu_of "$CONNECT_PID")
  BEGIN=$(now)
  maria car -e "CALL churn($((CHANGES / 10)), $ROWS)"
  WRITTEN=$(now)
  WANT=$(maria car -e 'SELECT SUM(v) FROM bench')
  until [ "$(psql_ -d "bench_$MODE" -c 'SELECT sum(v) FROM bench')" = "$WANT" ]; do
    kill -0 "$PID" 2>/dev/null || { tail -n 30 "$WORK/$MODE.log" >&2; exit 1; }
    sleep 0.05
  done
  DONE=$(now)
  CPU=$(python3 -c "print(f'{$(cpu_of "$PID") - $CPU0:.1f}')")
  RSS=$(rss_of "$PID")
  JVM=""
  if [ "$MODE" = debezium ]; then
    JVM=" + Connect $(python3 -c "print(f'{$(cpu_of "$CONNECT_PID") - $JVM0:.1f}')") CPU s, $(rss_of "$CONNECT_PID") MiB"
  fi
  LAG=$(psql_ -d "bench_$MODE" -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY e) * 1000)::numeric)::text || ' / ' ||
      round((percentile_cont(0.99) WITHIN GROUP (ORDER BY e) * 1000)::numeric)::text
    FROM (SELECT extract(epoch FROM applied_at - updated_at) AS e FROM bench WHERE v > 0) t")
  # Paced: a rate every path keeps up with.
  PACE_START=$(maria -e 'SELECT NOW(6)')
  maria car -e "CALL pace($((PACED_SECONDS * 200)), $ROWS)"
  WANT=$(maria car -e 'SELECT SUM(v) FROM bench')
  until [ "$(psql_ -d "bench_$MODE" -c 'SELECT sum(v) FROM bench')" = "$WANT" ]; do sleep 0.05; done
  PACED=$(psql_ -d "bench_$MODE" -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY e) * 1000)::numeric)::text || ' / ' ||
      round((percentile_cont(0.99) WITHIN GROUP (ORDER BY e) * 1000)::numeric)::text
    FROM (SELECT extract(epoch FROM applied_at - updated_at) AS e FROM bench WHERE updated_at >= '$PACE_START') t")
  python3 - "$MODE" "$SNAPSHOT" "$CHANGES" "$BEGIN" "$WRITTEN" "$DONE" "$LAG" "$CPU" "$RSS" "$JVM" "$PACED" >>"$RESULTS" <<'PY'
import sys
mode, snapshot, changes, begin, written, done, lag, cpu, rss, jvm, paced = sys.argv[1:]
changes, begin, written, done = int(changes), float(begin), float(written), float(done)
print(f"| {mode} | {int(snapshot):,} | {changes / (written - begin):,.0f} | {changes / (done - begin):,.0f} | {lag} | {paced} | {cpu} CPU s, {rss} MiB{jvm} |")
PY
  tail -n 1 "$RESULTS" >&2
  kill -TERM "$PID"; wait "$PID" || true; PID=
  [ "$MODE" = debezium ] && curl -sf -X DELETE "$CONNECT/connectors/bench-$$" >/dev/null || true
done

echo
echo "CDC, $ROWS rows snapshot and $CHANGES row changes (transactions of 10), $(nproc) cores, $(date -u +%F)"
echo
echo "| path | snapshot rows/s | burst: source changes/s | burst: end-to-end changes/s | burst: lag p50 / p99 ms | paced (~2,000/s): lag p50 / p99 ms | logpipe (and Connect) during the burst |"
echo "|---|---|---|---|---|---|---|"
cat "$RESULTS"
