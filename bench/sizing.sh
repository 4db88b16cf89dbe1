#!/usr/bin/env bash
# What the Kubernetes small profile's pod uses: the release binary in the
# container image (deploy/container), run on podman with the profile's
# limits (1 CPU, 512 MiB) and environment, in three phases:
#   idle   no records, SECONDS_PER_PHASE seconds
#   seed   the built-in generator at the seed's rate (100 logs every 5 s,
#          100 events every 10 s: 30 records/s)
#   load   `logpipe generate` as fast as the pod takes it (LOAD_COUNT logs,
#          2 connections, from the host)
# For each: CPU (mean and max of 1-second samples, % of one core) and
# memory (the process's peak resident set, VmHWM).
#
#   bench/sizing.sh            # SECONDS_PER_PHASE=60 LOAD_COUNT=500000
#
# Needs root, podman and docker-compose's friends as scripts/test.sh
# installs them (runc, netavark, iptables).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export CONTAINERS_CONF=$PWD/deploy/container/podman-containers.conf
PHASE=${SECONDS_PER_PHASE:-60}
LOAD_COUNT=${LOAD_COUNT:-500000}
TAG=localhost/logpipe-sizing:latest
NAME=logpipe-sizing-$$
deploy/container/image.sh --binary "$BIN" --runtime host --tag "$TAG" >/dev/null

sizing_cleanup() {
  podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$NAME" >/dev/null 2>&1 || true
  podman rmi -f "$TAG" localhost/logpipe-runtime-host:latest >/dev/null 2>&1 || true
  cleanup
}
trap sizing_cleanup EXIT

# run GENERATOR: the small profile's container, limits and environment.
run() {
  podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$NAME" >/dev/null 2>&1 || true
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  podman run -d --name "$NAME" --health-interval=disable --memory 512m --cpus 1 \
    -p "127.0.0.1:$PORT:8081" -v "$NAME:/data" \
    -e LOGPIPE__AUTH__ALLOW_UNAUTHENTICATED=true -e LOGPIPE__GENERATOR__ENABLED="$1" \
    -e LOGPIPE__QUERY__MAX_MEMORY_BYTES=134217728 "$TAG" up >/dev/null 2>&1
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && return 0
    sleep 0.3
  done
  echo "the container did not get ready:" >&2
  podman logs "$NAME" >&2
  exit 1
}

# The container's CPU time (µs; cgroup v1 or v2) and its process's peak
# resident memory (VmHWM, what the bench scripts report as peak RSS).
cgroup_stats() {
  local path
  path=$(podman inspect --format '{{.State.CgroupPath}}' "$NAME")
  PROC=/proc/$(podman inspect --format '{{.State.Pid}}' "$NAME")/status
  if [ -f "/sys/fs/cgroup$path/cpu.stat" ]; then
    CPU_FILE=/sys/fs/cgroup$path/cpu.stat
    cpu_usec() { awk '/^usage_usec/ {print $2}' "$CPU_FILE"; }
  else
    CPU_FILE=/sys/fs/cgroup/cpuacct$path/cpuacct.usage
    cpu_usec() { echo $(( $(cat "$CPU_FILE") / 1000 )); }
  fi
  mem_bytes() { awk '/^VmHWM:/ {print $2 * 1024}' "$PROC"; }
}

# sample SECONDS [PID_TO_WAIT_FOR]: prints "mean_cpu max_cpu max_mem_mib".
sample() {
  local until=$(($SECONDS + $1)) waitfor=${2:-}
  cgroup_stats
  local usage0 usage1 cpu n=0 sum=0 max=0 mem maxmem=0
  usage0=$(cpu_usec)
  while :; do
    sleep 1
    usage1=$(cpu_usec)
    # Per mille of one core over the second.
    cpu=$(( (usage1 - usage0) / 1000 ))
    usage0=$usage1
    mem=$(( $(mem_bytes) / 1048576 ))
    n=$((n + 1)); sum=$((sum + cpu))
    [ "$cpu" -gt "$max" ] && max=$cpu
    [ "$mem" -gt "$maxmem" ] && maxmem=$mem
    if [ -n "$waitfor" ]; then
      kill -0 "$waitfor" 2>/dev/null || break
    elif [ $SECONDS -ge $until ]; then
      break
    fi
  done
  echo "$(awk -v s="$sum" -v n="$n" 'BEGIN {printf "%.1f", s / n / 10}') $(awk -v m="$max" 'BEGIN {printf "%.1f", m / 10}') $maxmem"
}

printf '%-6s %10s %9s %12s  %s\n' phase "CPU mean" "CPU max" "peak RSS" note
run false
sleep 5
read -r mean max mem < <(sample "$PHASE")
printf '%-6s %9s%% %8s%% %9s MiB  %s\n' idle "$mean" "$max" "$mem" "no records"
run true
sleep 5
read -r mean max mem < <(sample "$PHASE")
printf '%-6s %9s%% %8s%% %9s MiB  %s\n' seed "$mean" "$max" "$mem" "30 records/s (the built-in generator)"
run false
started=$(date +%s.%N)
"$BIN" generate --target "http://127.0.0.1:$PORT" --count "$LOAD_COUNT" --batch-size 500 \
  --concurrency 2 >"$WORK/generate.log" 2>&1 &
GEN=$!
read -r mean max mem < <(sample 0 "$GEN")
wait "$GEN"
elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
rate=$(python3 -c "print(f'{$LOAD_COUNT / $elapsed:,.0f}')")
printf '%-6s %9s%% %8s%% %9s MiB  %s\n' load "$mean" "$max" "$mem" "$LOAD_COUNT logs in ${elapsed}s: $rate/s acknowledged"
