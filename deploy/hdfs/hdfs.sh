#!/usr/bin/env bash
# A real HDFS (Hadoop's MiniDFSCluster: a NameNode and DataNodes in one JVM)
# from Maven Central's jars on the machine's JDK 17, every port on 127.0.0.1.
# For the HDFS lake's tests and for trying `lake.root = "hdfs://…"` locally;
# a production cluster is yours (docs/operations.md).
#
#   hdfs.sh fetch                    fetch the jars (cached in
#                                    $HOME/.cache/logpipe/hdfs) and compile MiniDfs.java
#   hdfs.sh start DIR [RPC_PORT]     start in the background with its data in DIR,
#                                    wait until it takes writes; the last line on
#                                    stdout is hdfs://127.0.0.1:PORT (RPC_PORT 0 or
#                                    none: a free port)
#   hdfs.sh stop DIR                 SIGTERM (clean shutdown), SIGKILL after 30 s
#
# Environment: HADOOP_VERSION (default the pom's, 3.4.2), HDFS_HEAP_OPTS
# (default -Xmx384m), HDFS_DATANODES (default 1), HDFS_START_TIMEOUT
# (seconds, default 120), JAVA (default java), MVN (default mvn).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LOGPIPE_HDFS_CACHE:-$HOME/.cache/logpipe/hdfs}
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
HEAP=${HDFS_HEAP_OPTS:--Xmx384m}
DATANODES=${HDFS_DATANODES:-1}
START_TIMEOUT=${HDFS_START_TIMEOUT:-120}
MVN_ARGS=()
[ -n "${HADOOP_VERSION:-}" ] && MVN_ARGS+=("-Dhadoop.version=$HADOOP_VERSION")
# Hadoop on JDK 17 reflects into java.base.
OPENS="--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
 --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
 --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED
 --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED"

die() { echo "hdfs.sh: $*" >&2; exit 1; }

KEY=$( (cat "$HERE/pom.xml"; echo "${HADOOP_VERSION:-}") | sha256sum | cut -c1-12)
LIBS=$CACHE/libs-$KEY
CLASSES=$CACHE/classes-$KEY-$(sha256sum "$HERE/MiniDfs.java" | cut -c1-12)

fetch() {
  if [ ! -f "$LIBS/.complete" ]; then
    command -v "$MVN" >/dev/null || die "mvn not found: Maven fetches Hadoop's jars from Maven Central"
    local tmp=$LIBS.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$CACHE"
    # Maven's output stays on stderr: stdout's last line is the address.
    "$MVN" -q -B -Dstyle.color=never -f "$HERE/pom.xml" ${MVN_ARGS[@]+"${MVN_ARGS[@]}"} \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >&2 || { rm -rf "$tmp"; die "mvn failed"; }
    ls "$tmp"/hadoop-client-minicluster-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "no hadoop-client-minicluster jar was fetched"; }
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    touch "$LIBS/.complete"
  fi
  if [ ! -f "$CLASSES/MiniDfs.class" ]; then
    local javac
    javac=$(dirname "$(readlink -f "$(command -v "$JAVA")")")/javac
    [ -x "$javac" ] || javac=javac
    local tmp=$CLASSES.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    "$javac" --release 17 -nowarn -cp "$LIBS/*" -d "$tmp" "$HERE/MiniDfs.java" >&2 || { rm -rf "$tmp"; die "javac failed (a JDK 17, not a JRE, is needed)"; }
    rm -rf "$CLASSES"
    mv "$tmp" "$CLASSES"
  fi
}

start() {
  local dir=${1:?usage: hdfs.sh start DIR [RPC_PORT]} port=${2:-0} pid url deadline
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -f "$dir/url"
  # shellcheck disable=SC2086  # HEAP and OPENS are lists of options
  nohup "$JAVA" $HEAP $OPENS -Djava.net.preferIPv4Stack=true -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$HERE/log4j.properties" -cp "$CLASSES:$LIBS/*" \
    MiniDfs --dir "$dir" --rpc-port "$port" --http-port 0 --datanodes "$DATANODES" \
    >"$dir/minidfs.out" 2>"$dir/minidfs.log" </dev/null &
  pid=$!
  echo "$pid" >"$dir/pid"
  deadline=$(($(date +%s) + START_TIMEOUT))
  until url=$(grep -m1 '^hdfs://' "$dir/minidfs.out" 2>/dev/null); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/minidfs.log" >&2
      die "MiniDfs exited while starting (log: $dir/minidfs.log)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { kill -9 "$pid"; tail -n 30 "$dir/minidfs.log" >&2; die "no address after ${START_TIMEOUT}s"; }
    sleep 0.3
  done
  echo "$url"
}

stop() {
  local dir=${1:?usage: hdfs.sh stop DIR} pid deadline
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(date +%s) + 30))
  while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.3; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  fetch) fetch ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
