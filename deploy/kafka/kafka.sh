#!/usr/bin/env bash
# Apache Kafka 4.x (KRaft, no ZooKeeper) on 127.0.0.1 (or KAFKA_HOST), from Maven Central jars:
# the broker profiles logpipe is tested and benchmarked on.
#
#   kafka.sh fetch                      fetch the broker jars once (cached outside the clone)
#   kafka.sh start DIR [NODES] [PORT]   format (once) and start a cluster of NODES (1 or 3)
#                                       combined controller+broker nodes, state in DIR; node n
#                                       serves clients on PORT+10(n-1), its controller on the
#                                       next port. Prints the bootstrap servers last.
#                                       Defaults: 1 node, port 9092.
#   kafka.sh stop DIR                   SIGTERM every node (SIGKILL after KAFKA_STOP_TIMEOUT s)
#   kafka.sh kill DIR NODE              SIGKILL one node: a crash
#   kafka.sh stop-node DIR NODE         SIGTERM one node and wait: a clean shutdown
#   kafka.sh start-node DIR NODE        start one node again on its data, wait until it serves
#   kafka.sh leader DIR TOPIC PARTITION the node id leading a partition
#   kafka.sh in-sync DIR TOPIC          the fewest in-sync replicas of any of its partitions
#   kafka.sh status DIR                 which nodes run, their ports and logs
#   kafka.sh fetch-connect              fetch the Connect worker and Debezium jars once
#   kafka.sh connect DIR [PORT]         start a Kafka Connect 4.3.1 worker (distributed mode)
#                                       with Debezium's MariaDB connector 3.5.0.Final for the
#                                       cluster in DIR, REST on 127.0.0.1:PORT (default 8083);
#                                       prints its URL last. `stop DIR` stops it too.
#   kafka.sh cli DIR CLASS ARGS…        a Kafka CLI class on the broker classpath, e.g.
#                                       kafka.sh cli DIR org.apache.kafka.tools.TopicCommand \
#                                         --bootstrap-server 127.0.0.1:9092 --describe
#
# One cluster id per DIR (DIR/cluster.id), written when DIR is first
# formatted and used for every node, so a node can never be formatted for
# another cluster. A node whose data belongs to another cluster (the seed's
# "meta.properties mismatch" after a re-format) is refused with the paths to
# delete. A 3-node cluster gets replication factor 3 and min.insync.replicas 2
# for every topic by default; logpipe's own topics take theirs from
# bus.kafka.replication_factor and bus.kafka.min_insync_replicas.
#
# Environment:
#   KAFKA_PROPERTIES   a file of server properties appended to every node (tests:
#                      fast retention; any tuning)
#   KAFKA_SCRAM        USER:PASSWORD — also serve SASL_SSL (SCRAM-SHA-512) on PORT+2 of
#                      each node, with KAFKA_TLS_CERT and KAFKA_TLS_KEY (PEM files), and
#                      enforce ACLs there (everything no ACL denies is allowed; add them
#                      with `cli DIR org.apache.kafka.tools.AclCommand` on PORT)
#   KAFKA_HOST         the address every listener binds and advertises (default
#                      127.0.0.1; another host's clients need one they reach,
#                      e.g. the master's address in the several-hosts test)
#   KAFKA_HEAP_OPTS    broker heap (default "-Xms64m -Xmx256m")
#   KAFKA_START_TIMEOUT, KAFKA_STOP_TIMEOUT   seconds (default 120, 30)
#   LOGPIPE_KAFKA_CACHE  where the jars go (default ~/.cache/logpipe/kafka)
#   JAVA, MVN          binaries (default $JAVA_HOME/bin/java or java; mvn)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LOGPIPE_KAFKA_CACHE:-$HOME/.cache/logpipe/kafka}
HEAP=${KAFKA_HEAP_OPTS:--Xms64m -Xmx256m}
HOST=${KAFKA_HOST:-127.0.0.1}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
if [ -z "${JAVA:-}" ]; then
  if [ -n "${JAVA_HOME:-}" ]; then JAVA=$JAVA_HOME/bin/java; else JAVA=java; fi
fi
MVN=${MVN:-mvn}
LOG4J=$HERE/log4j2.properties
JVM_OPTS="-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true"
LIBS=$CACHE/libs-$(sha256sum "$HERE/pom.xml" | cut -c1-12)
CONNECT_KEY=$(sha256sum "$HERE/connect-pom.xml" | cut -c1-12)
CONNECT_LIBS=$CACHE/connect-libs-$CONNECT_KEY
CONNECT_PLUGINS=$CACHE/connect-plugins-$CONNECT_KEY

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# fetch_into POM DIR [MAVEN ARGS…]: copy POM's dependencies into DIR once.
fetch_into() {
  local pom=$1 into=$2 tmp major
  shift 2
  [ -f "$into/.complete" ] && return 0
  command -v "$MVN" >/dev/null || die "mvn not found: Maven fetches the jars from Maven Central"
  major=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1") ? v[2] : v[1]; exit }')
  [ "${major:-0}" -ge 17 ] || die "Kafka 4.x needs Java 17 or newer ($JAVA is ${major:-not runnable})"
  tmp=$into.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$(dirname "$into")"
  log "fetching $(basename "$pom") $* (Maven Central) into $into"
  # Maven prints to stdout: keep it on stderr, stdout is for results.
  "$MVN" -q -B -Dstyle.color=never -f "$pom" "$@" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" >&2 || { rm -rf "$tmp"; die "mvn could not fetch the jars of $pom $*"; }
  rm -rf "$into"
  mv "$tmp" "$into"
  touch "$into/.complete"
}

fetch() { fetch_into "$HERE/pom.xml" "$LIBS"; }

# kjava CLASS ARGS…: a Kafka class on the broker classpath, logging warnings only.
kjava() {
  "$JAVA" -Xmx256m -Dlogpipe.kafka.log.level=WARN -Dlog4j2.configurationFile="$LOG4J" \
    -cp "$LIBS/*" "$@"
}

node_dir() { echo "$1/node$2"; }
client_port() { echo $(($2 + 10 * ($1 - 1))); }     # client_port NODE BASE
prop() { sed -n "s/^$2=//p" "$1" | tail -n 1; }       # prop FILE KEY
port_open() { (exec 3<>"/dev/tcp/$1/$2") >/dev/null 2>&1; }   # port_open HOST PORT
# client_address NODE_DIR: HOST PORT of its PLAINTEXT listener.
client_address() { prop "$1/server.properties" listeners | sed 's#^PLAINTEXT://\([^:]*\):\([0-9]*\).*#\1 \2#'; }
nodes_of() { cat "$1/nodes" 2>/dev/null || echo 1; }

# config DIR NODE NODES BASE: server.properties of one node.
config() {
  local dir=$1 n=$2 nodes=$3 base=$4 port voters="" i listeners advertised protocols
  port=$(client_port "$n" "$base")
  for i in $(seq "$nodes"); do
    voters=${voters:+$voters,}$i@$HOST:$(($(client_port "$i" "$base") + 1))
  done
  listeners="PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$((port + 1))"
  advertised="PLAINTEXT://$HOST:$port"
  protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [ -n "${KAFKA_SCRAM:-}" ]; then
    listeners="$listeners,SASL_SSL://$HOST:$((port + 2))"
    advertised="$advertised,SASL_SSL://$HOST:$((port + 2))"
    protocols="$protocols,SASL_SSL:SASL_SSL"
  fi
  local replicas=$((nodes < 3 ? nodes : 3)) isr=$((nodes < 3 ? 1 : 2))
  cat <<PROPS
# Generated by kafka.sh for node $n of $nodes: edit kafka.sh, not this file.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$(node_dir "$dir" "$n")/data
# Topics: replicated on every node up to 3, writes need 2 in sync on a
# 3-node cluster (acks=all then survives the loss of one node).
default.replication.factor=$replicas
min.insync.replicas=$isr
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$isr
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
num.partitions=1
# logpipe creates its topics; a producer or consumer never creates one.
auto.create.topics.enable=false
# No wait before the first rebalance of a classic consumer group.
group.initial.rebalance.delay.ms=0
# A small machine.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
PROPS
  if [ -n "${KAFKA_SCRAM:-}" ]; then
    [ -n "${KAFKA_TLS_CERT:-}" ] && [ -n "${KAFKA_TLS_KEY:-}" ] \
      || die "KAFKA_SCRAM needs KAFKA_TLS_CERT and KAFKA_TLS_KEY (PEM files)"
    cat "$KAFKA_TLS_KEY" "$KAFKA_TLS_CERT" >"$(node_dir "$dir" "$n")/keystore.pem"
    cat <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$(node_dir "$dir" "$n")/keystore.pem
# ACLs are enforced (the SASL users get what no ACL denies; the loopback
# PLAINTEXT listener, the controllers' and the brokers' own, is the admin).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS
PROPS
  fi
  if [ -n "${KAFKA_PROPERTIES:-}" ]; then
    echo "# From $KAFKA_PROPERTIES:"
    cat "$KAFKA_PROPERTIES"
  fi
}

# format_node DIR NODE: format a node's storage for DIR's cluster, once; refuse
# data of another cluster with what to delete.
format_node() {
  local dir=$1 n=$2 conf data cid found
  conf=$(node_dir "$dir" "$n")/server.properties
  data=$(prop "$conf" log.dirs)
  cid=$(cat "$dir/cluster.id")
  if [ -f "$data/meta.properties" ]; then
    found=$(prop "$data/meta.properties" cluster.id)
    [ "$found" = "$cid" ] || die "node $n's data in $data belongs to cluster $found, but $dir is cluster $cid. \
Either delete $data (that node's copy of the data is lost; on a 3-node cluster the others still hold it) \
or put $found back into $dir/cluster.id. Kafka refuses to start a node of another cluster."
    return 0
  fi
  # A static quorum (controller.quorum.voters): every node is formatted
  # the same way, with the cluster's id.
  local extra=()
  if [ -n "${KAFKA_SCRAM:-}" ]; then
    extra+=(--add-scram "SCRAM-SHA-512=[name=${KAFKA_SCRAM%%:*},password=${KAFKA_SCRAM#*:}]")
  fi
  kjava kafka.tools.StorageTool format -t "$cid" -c "$conf" ${extra[@]+"${extra[@]}"} \
    >"$(node_dir "$dir" "$n")/format.log" 2>&1 || true
  [ -f "$data/meta.properties" ] || { cat "$(node_dir "$dir" "$n")/format.log" >&2; die "formatting node $n failed"; }
}

pid_alive() { [ -f "$1/pid" ] && kill -0 "$(cat "$1/pid")" 2>/dev/null; }

start_node() {
  local dir=$1 n=$2 nd host port deadline pid
  nd=$(node_dir "$dir" "$n")
  pid_alive "$nd" && { log "node $n already runs"; return 0; }
  read -r host port < <(client_address "$nd")
  ! port_open "$host" "$port" || die "$host:$port is already in use: stop what listens there, or start on another PORT"
  [ -f "$nd/server.log" ] && mv -f "$nd/server.log" "$nd/server.log.prev"
  # shellcheck disable=SC2086  # HEAP and JVM_OPTS are lists of options
  nohup "$JAVA" $HEAP $JVM_OPTS -Dlog4j2.configurationFile="$LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$nd/server.properties" >"$nd/server.log" 2>&1 </dev/null &
  echo $! >"$nd/pid"
}

wait_node() {
  local dir=$1 n=$2 nd host port deadline
  nd=$(node_dir "$dir" "$n")
  read -r host port < <(client_address "$nd")
  deadline=$(($(date +%s) + START_TIMEOUT))
  until grep -qF "Kafka Server started" "$nd/server.log" 2>/dev/null && port_open "$host" "$port"; do
    if ! pid_alive "$nd"; then
      tail -n 30 "$nd/server.log" >&2
      die "node $n exited while starting (log: $nd/server.log)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$nd/server.log" >&2; die "node $n not ready after ${START_TIMEOUT}s"; }
    sleep 0.2
  done
}

bootstrap() {
  local dir=$1 n out=""
  for n in $(seq "$(nodes_of "$dir")"); do
    out=${out:+$out,}$(client_address "$(node_dir "$dir" "$n")" | tr ' ' ':')
  done
  echo "$out"
}

start() {
  local dir=${1:?usage: kafka.sh start DIR [NODES] [PORT]} nodes=${2:-1} base=${3:-9092} n
  case $nodes in 1 | 3) ;; *) die "NODES is 1 or 3, not $nodes" ;; esac
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -s "$dir/nodes" ] && [ "$(cat "$dir/nodes")" != "$nodes" ]; then
    die "$dir holds a $(cat "$dir/nodes")-node cluster; delete $dir for a $nodes-node one"
  fi
  echo "$nodes" >"$dir/nodes"
  if [ ! -s "$dir/cluster.id" ]; then
    kjava kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$dir/cluster.id"
    grep -qE '^[A-Za-z0-9_-]{22}$' "$dir/cluster.id" || die "StorageTool random-uuid failed"
  fi
  for n in $(seq "$nodes"); do
    mkdir -p "$(node_dir "$dir" "$n")"
    config "$dir" "$n" "$nodes" "$base" >"$(node_dir "$dir" "$n")/server.properties"
    format_node "$dir" "$n"
  done
  for n in $(seq "$nodes"); do start_node "$dir" "$n"; done
  for n in $(seq "$nodes"); do wait_node "$dir" "$n"; done
  log "cluster $(cat "$dir/cluster.id"): $nodes node(s) ready, state in $dir"
  bootstrap "$dir"
}

stop() {
  local dir=${1:?usage: kafka.sh stop DIR} n nd pid deadline
  stop_connect "$dir"
  for n in $(seq "$(nodes_of "$dir")"); do
    nd=$(node_dir "$dir" "$n")
    pid_alive "$nd" && kill -TERM "$(cat "$nd/pid")" 2>/dev/null || true
  done
  deadline=$(($(date +%s) + STOP_TIMEOUT))
  for n in $(seq "$(nodes_of "$dir")"); do
    nd=$(node_dir "$dir" "$n")
    while pid_alive "$nd" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    pid_alive "$nd" && kill -KILL "$(cat "$nd/pid")" 2>/dev/null || true
    rm -f "$nd/pid"
  done
}

kill_node() {
  local nd
  nd=$(node_dir "${1:?usage: kafka.sh kill DIR NODE}" "${2:?NODE}")
  pid_alive "$nd" || die "node $2 does not run"
  kill -KILL "$(cat "$nd/pid")"
  while pid_alive "$nd"; do sleep 0.05; done
  rm -f "$nd/pid"
}

# term_wait DIR: SIGTERM the process of DIR/pid, wait up to STOP_TIMEOUT,
# then SIGKILL; forget the pid.
term_wait() {
  local deadline
  kill -TERM "$(cat "$1/pid")" 2>/dev/null || true
  deadline=$(($(date +%s) + STOP_TIMEOUT))
  while pid_alive "$1" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  pid_alive "$1" && kill -KILL "$(cat "$1/pid")" 2>/dev/null || true
  rm -f "$1/pid"
}

stop_node() {
  local nd
  nd=$(node_dir "${1:?usage: kafka.sh stop-node DIR NODE}" "${2:?NODE}")
  pid_alive "$nd" || die "node $2 does not run"
  term_wait "$nd"
}

leader() {
  local dir=${1:?usage: kafka.sh leader DIR TOPIC PARTITION} topic=${2:?TOPIC} partition=${3:?PARTITION}
  describe "$dir" "$topic" \
    | awk -v p="$partition" '$0 ~ "Partition: " p "[^0-9]" { for (i = 1; i <= NF; i++) if ($i == "Leader:") print $(i + 1) }'
}

# describe DIR TOPIC: TopicCommand --describe through the first node that answers.
describe() {
  local dir=$1 topic=$2 server
  for server in $(bootstrap "$dir" | tr ',' ' '); do
    port_open "${server%:*}" "${server##*:}" || continue
    kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$server" \
      --describe --topic "$topic" 2>/dev/null && return 0
  done
  return 1
}

# in_sync DIR TOPIC: the smallest number of in-sync replicas of the topic's partitions.
in_sync() {
  local dir=${1:?usage: kafka.sh in-sync DIR TOPIC} topic=${2:?TOPIC}
  describe "$dir" "$topic" \
    | awk '/Partition: / { for (i = 1; i <= NF; i++) if ($i == "Isr:") { n = split($(i + 1), r, ","); if (min == "" || n < min) min = n } }
           END { print (min == "" ? 0 : min) }'
}

status() {
  local dir=${1:?usage: kafka.sh status DIR} n nd
  for n in $(seq "$(nodes_of "$dir")"); do
    nd=$(node_dir "$dir" "$n")
    if pid_alive "$nd"; then state="runs, pid $(cat "$nd/pid")"; else state="stopped"; fi
    echo "node $n: $state, $(prop "$nd/server.properties" listeners), log $nd/server.log"
  done
}

# http_status HOST PORT PATH: the status code of a GET, without curl.
http_status() {
  (
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
    IFS= read -r -t 5 line <&3 || true
    echo "${line:-}" | awk '{ print $2 }'
  ) 2>/dev/null
}

# connect DIR [PORT]: a Connect worker for DIR's cluster, state in DIR/connect.
connect() {
  local dir=${1:?usage: kafka.sh connect DIR [PORT]} port=${2:-8083} cd rf pid deadline
  dir=$(cd "$dir" && pwd)
  cd=$dir/connect
  pid_alive "$cd" && { log "connect already runs"; echo "http://$HOST:$(prop "$cd/worker.properties" rest.port)"; return 0; }
  ! port_open "$HOST" "$port" || die "$HOST:$port is already in use: stop what listens there, or give another PORT"
  fetch_connect
  mkdir -p "$cd"
  rf=$(nodes_of "$dir"); [ "$rf" -le 3 ] || rf=3
  cat >"$cd/worker.properties" <<PROPS
# Generated by kafka.sh connect: edit kafka.sh, not this file.
bootstrap.servers=$(bootstrap "$dir")
group.id=logpipe-connect
# Change events as JSON with their schema: the types a sink needs.
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
config.storage.topic=connect-configs
config.storage.replication.factor=$rf
offset.storage.topic=connect-offsets
offset.storage.replication.factor=$rf
offset.storage.partitions=5
status.storage.topic=connect-status
status.storage.replication.factor=$rf
status.storage.partitions=1
offset.flush.interval.ms=1000
listeners=http://$HOST:$port
rest.advertised.host.name=$HOST
rest.advertised.port=$port
rest.port=$port
plugin.path=$CONNECT_PLUGINS
PROPS
  [ -f "$cd/connect.log" ] && mv -f "$cd/connect.log" "$cd/connect.log.prev"
  # shellcheck disable=SC2086  # JVM_OPTS is a list of options
  nohup "$JAVA" -Xms64m -Xmx384m $JVM_OPTS -Dlog4j2.configurationFile="$LOG4J" \
    -cp "$CONNECT_LIBS/*" org.apache.kafka.connect.cli.ConnectDistributed "$cd/worker.properties" \
    >"$cd/connect.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$cd/pid"
  deadline=$(($(date +%s) + START_TIMEOUT))
  until [ "$(http_status "$HOST" "$port" /connectors)" = 200 ]; do
    pid_alive "$cd" || { tail -n 40 "$cd/connect.log" >&2; rm -f "$cd/pid"; die "Connect exited (log: $cd/connect.log)"; }
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 40 "$cd/connect.log" >&2; die "Connect not ready after ${START_TIMEOUT}s"; }
    sleep 0.5
  done
  log "connect ready: pid $pid, log $cd/connect.log"
  echo "http://$HOST:$port"
}

fetch_connect() {
  fetch_into "$HERE/connect-pom.xml" "$CONNECT_LIBS"
  fetch_into "$HERE/connect-pom.xml" "$CONNECT_PLUGINS/debezium-mariadb" -Pdebezium-mariadb
}

stop_connect() {
  pid_alive "$1/connect" || return 0
  term_wait "$1/connect"
}

case ${1:-} in
  fetch) fetch ;;
  fetch-connect) fetch_connect ;;
  connect) shift; connect "$@" ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  kill) shift; kill_node "$@" ;;
  stop-node) shift; stop_node "$@" ;;
  start-node) shift; fetch; start_node "$1" "$2"; wait_node "$1" "$2" ;;
  leader) shift; fetch; leader "$@" ;;
  in-sync) shift; fetch; in_sync "$@" ;;
  status) shift; status "$@" ;;
  cli) shift; fetch; shift; kjava "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
