#!/usr/bin/env bash
# A real Kubernetes API server (kube-apiserver with its etcd, no scheduler,
# no kubelet: objects are validated, defaulted, admitted and stored, no pod
# runs) on 127.0.0.1, for the Helm chart's server-side test. No Kubernetes
# distribution installs here (no k3s, kind or kube-apiserver package), so
# both programs are built by the machine's Go from the Go module proxy:
# k8s.io/kubernetes and etcd's server at the versions this folder's go.mod
# pins (k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the
# k8s.io/* modules with folders of its own tree, so go.mod here replaces
# them with their published releases).
#
#   apiserver.sh build              build both once (about 6 minutes on 2 cores)
#                                   into $HOME/.cache/logpipe/tools/kube-KEY
#   apiserver.sh built              exit 0 when both are built
#   apiserver.sh start DIR          start etcd and kube-apiserver on free
#                                   loopback ports with their data in DIR, wait
#                                   until /readyz answers; the last line on
#                                   stdout is the path of a kubeconfig for them
#   apiserver.sh stop DIR           stop both and keep DIR
#
# Environment: APISERVER_START_TIMEOUT (seconds, default 120), GO (default go).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GO=${GO:-go}
START_TIMEOUT=${APISERVER_START_TIMEOUT:-120}
KEY=$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/etcd/main.go" | sha256sum | cut -c1-12)
BIN=${LOGPIPE_KUBE_BIN:-$HOME/.cache/logpipe/tools/kube-$KEY}

die() { echo "apiserver.sh: $*" >&2; exit 1; }

build() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/etcd" ] && return 0
  command -v "$GO" >/dev/null || die "go not found: kube-apiserver and etcd are built from the Go module proxy"
  local tmp=$BIN.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Build output stays on stderr; -trimpath keeps the binaries free of this
  # machine's paths.
  # The version kube-apiserver reports (kubectl version, discovery), which
  # Kubernetes' own build stamps from git.
  local version
  version=$(cd "$HERE" && GOFLAGS="-mod=readonly -buildvcs=false" "$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)
  local stamp="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=$(echo "$version" | cut -d. -f1 | tr -d v) -X k8s.io/component-base/version.gitMinor=$(echo "$version" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "$HERE" && GOFLAGS="-mod=readonly -buildvcs=false" "$GO" build -trimpath -ldflags "$stamp" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver \
    && GOFLAGS="-mod=readonly -buildvcs=false" "$GO" build -trimpath -o "$tmp/etcd" ./etcd) >&2 || { rm -rf "$tmp"; die "go build failed"; }
  rm -rf "$BIN"
  mv "$tmp" "$BIN"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() {
  local dir=${1:?usage: apiserver.sh start DIR} etcd_port peer_port port token deadline process
  build
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  etcd_port=$(free_port)
  peer_port=$(free_port)
  port=$(free_port)
  # The service-account token signer and one admin bearer token, before
  # anything runs that a failure here would leave behind.
  [ -f "$dir/sa.key" ] || openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  echo "$token,admin,admin,system:masters" >"$dir/tokens.csv"
  "$BIN/etcd" --name test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "test=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$dir/etcd.pid"

  # The ServiceAccount admission plugin waits for a namespace's `default`
  # account, which the controller manager (not run here) creates: left out,
  # so workloads are taken as a cluster would once that account exists.
  # The `kubernetes` Service's endpoint reconciler refuses a loopback
  # address: off, nothing here routes to the server through that Service.
  "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --cert-dir "$dir/certs" --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --disable-admission-plugins ServiceAccount \
    --endpoint-reconciler-type none \
    >"$dir/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >"$dir/kube-apiserver.pid"

  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$port
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
EOF
  deadline=$(($(date +%s) + START_TIMEOUT))
  until [ "$(curl -sk --max-time 2 -H "Authorization: Bearer $token" "https://127.0.0.1:$port/readyz" 2>/dev/null)" = ok ]; do
    for process in etcd kube-apiserver; do
      kill -0 "$(cat "$dir/$process.pid")" 2>/dev/null && continue
      tail -n 30 "$dir/$process.log" >&2
      stop "$dir"
      die "$process exited while starting (log: $dir/$process.log)"
    done
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$dir/kube-apiserver.log" >&2
      stop "$dir"
      die "kube-apiserver was not ready after ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  echo "$dir/kubeconfig"
}

stop() {
  local dir=${1:?usage: apiserver.sh stop DIR} pid deadline process
  for process in kube-apiserver etcd; do
    [ -f "$dir/$process.pid" ] || continue
    pid=$(cat "$dir/$process.pid")
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(($(date +%s) + 20))
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/$process.pid"
  done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  build) build ;;
  built) [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/etcd" ] ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
