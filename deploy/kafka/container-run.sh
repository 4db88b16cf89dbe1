#!/bin/bash
# The entrypoint of the Kafka image deploy/container/image.sh kafka builds
# for machines without a registry (the tests): Apache Kafka from Maven
# Central's jars (deploy/kafka/pom.xml), configured the way the apache/kafka
# image is, so deploy/compose/master-workers/master.yml runs on either.
#
#   KAFKA_FOO_BAR=x      → foo.bar=x   (KAFKA_FOO__BAR → foo_bar, KAFKA_FOO___BAR → foo-bar)
#   CLUSTER_ID           the id the data directory is formatted with, once;
#                        data of another cluster is refused
#   KAFKA_HEAP_OPTS      JVM heap options, not a setting
set -euo pipefail
CONFIG=/tmp/server.properties
: >"$CONFIG"
while IFS='=' read -r name _; do
  case $name in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS) continue ;;
    KAFKA_*)
      key=${name#KAFKA_}
      key=$(printf '%s' "$key" | tr '[:upper:]' '[:lower:]' | sed 's/___/-/g; s/__/\x01/g; s/_/./g; s/\x01/_/g')
      printf '%s=%s\n' "$key" "${!name}" >>"$CONFIG"
      ;;
  esac
done < <(env)
: "${CLUSTER_ID:?set CLUSTER_ID: the cluster id the data directory is formatted with}"
data=$(sed -n 's/^log\.dirs=//p' "$CONFIG" | tail -n 1)
: "${data:?set KAFKA_LOG_DIRS}"
java=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties -cp "/opt/kafka/libs/*")
if [ -f "$data/meta.properties" ]; then
  found=$(sed -n 's/^cluster\.id=//p' "$data/meta.properties")
  if [ "$found" != "$CLUSTER_ID" ]; then
    echo "the data in $data belongs to Kafka cluster $found, not CLUSTER_ID=$CLUSTER_ID: set CLUSTER_ID back or delete the volume" >&2
    exit 1
  fi
else
  "${java[@]}" kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$CONFIG"
fi
exec "${java[@]}" kafka.Kafka "$CONFIG"
