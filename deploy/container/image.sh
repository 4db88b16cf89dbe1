#!/usr/bin/env bash
# Builds container images with podman (or docker: CONTAINER_ENGINE=docker).
#
#   deploy/container/image.sh [--tag TAG] [--binary PATH] [--runtime IMAGE|host]
#       logpipe's image (deploy/container/Dockerfile), tagged logpipe:latest.
#       Without --binary the Dockerfile's build stage compiles the binary;
#       --binary puts an already-built one in (stripped), which takes
#       seconds. --runtime host builds the runtime image from this
#       machine's own libraries (see `base`), for a machine that cannot
#       pull from a registry; the binary must then be built on it.
#
#   deploy/container/image.sh base TAG BINARY...
#       A FROM-scratch image with the shared libraries each BINARY links
#       (ldd), CA certificates, /tmp, and users root, nobody (65534) and
#       logpipe (10001).
#
#   deploy/container/image.sh kafka TAG
#       Apache Kafka from Maven Central's jars (deploy/kafka/kafka.sh fetch)
#       on a Debian 12 rootfs with OpenJDK 17 made by debootstrap (once,
#       cached in ~/.cache/logpipe/images), configured by KAFKA_* variables
#       as the apache/kafka image is (deploy/kafka/container-run.sh): what
#       the tests run deploy/compose/master-workers/master.yml with.
#
#   deploy/container/image.sh program TAG BINARY NAME [PATH...]
#       `base` plus BINARY itself as /bin/NAME (the entrypoint), and each PATH (a file or a
#       folder its program reads) at the same place: how the tests run
#       Debian's Prometheus and Alertmanager in Compose without a registry.
set -euo pipefail
cd "$(dirname "$0")/../.."

ENGINE=${CONTAINER_ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

die() { echo "image.sh: $*" >&2; exit 1; }

# rootfs DIR BINARY...: the libraries, certificates and users of `base`.
rootfs() {
  local dir=$1 lib
  shift
  mkdir -p "$dir/etc/ssl/certs" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  for binary in "$@"; do
    [ -x "$binary" ] || die "$binary is not an executable file"
    for lib in $(ldd "$binary" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]*ld-linux/ {print $1}'); do
      mkdir -p "$dir$(dirname "$lib")"
      cp -L "$lib" "$dir$lib"
    done
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/" 2>/dev/null \
    || die "no /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates)"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nlogpipe:x:10001:10001:logpipe:/data:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nlogpipe:x:10001:\n' >"$dir/etc/group"
}

# build_from_rootfs TAG [ENTRYPOINT]
build_from_rootfs() {
  local tag=$1
  printf 'FROM scratch\nCOPY rootfs/ /\n' >"$WORK/Containerfile"
  [ -z "${2:-}" ] || printf 'ENTRYPOINT ["%s"]\n' "$2" >>"$WORK/Containerfile"
  "$ENGINE" build --quiet --format docker -t "$tag" -f "$WORK/Containerfile" "$WORK" >/dev/null
  echo "$tag"
}

case "${1:-}" in
  base)
    [ $# -ge 3 ] || die "usage: image.sh base TAG BINARY..."
    tag=$2
    shift 2
    rootfs "$WORK/rootfs" "$@"
    build_from_rootfs "$tag"
    exit 0
    ;;
  kafka)
    [ $# -eq 2 ] || die "usage: image.sh kafka TAG"
    tag=$2
    images="$HOME/.cache/logpipe/images"
    rootfs_tar="$images/debian-bookworm-jre17.tar"
    if [ ! -f "$rootfs_tar" ]; then
      command -v debootstrap >/dev/null 2>&1 || die "the Kafka image needs Debian's debootstrap"
      mkdir -p "$images"
      echo "image.sh: a Debian 12 rootfs with OpenJDK 17 (debootstrap, once)" >&2
      debootstrap --variant=minbase --include=openjdk-17-jre-headless bookworm "$WORK/rootfs" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
      rm -f "$WORK/rootfs/var/cache/apt/archives/"*.deb
      tar -C "$WORK/rootfs" -cf "$rootfs_tar.tmp" .
      mv "$rootfs_tar.tmp" "$rootfs_tar"
      rm -rf "$WORK/rootfs"
    fi
    deploy/kafka/kafka.sh fetch
    libs="${LOGPIPE_KAFKA_CACHE:-$HOME/.cache/logpipe/kafka}/libs-$(sha256sum deploy/kafka/pom.xml | cut -c1-12)"
    mkdir -p "$WORK/kafka"
    cp "$rootfs_tar" "$WORK/kafka/rootfs.tar"
    cp -r "$libs" "$WORK/kafka/libs"
    cp deploy/kafka/container-run.sh deploy/kafka/log4j2.properties "$WORK/kafka/"
    printf '%s\n' 'FROM scratch' 'ADD rootfs.tar /' 'COPY libs /opt/kafka/libs' \
      'COPY log4j2.properties /opt/kafka/log4j2.properties' 'COPY container-run.sh /opt/kafka/run' \
      'ENTRYPOINT ["/opt/kafka/run"]' >"$WORK/kafka/Containerfile"
    "$ENGINE" build --quiet --format docker -t "$tag" -f "$WORK/kafka/Containerfile" "$WORK/kafka" >/dev/null
    echo "$tag"
    exit 0
    ;;
  program)
    [ $# -ge 4 ] || die "usage: image.sh program TAG BINARY NAME [PATH...]"
    tag=$2 binary=$3 name=$4
    shift 4
    rootfs "$WORK/rootfs" "$binary"
    mkdir -p "$WORK/rootfs/bin"
    cp -L "$binary" "$WORK/rootfs/bin/$name"
    for path in "$@"; do
      [ -e "$path" ] || die "$path does not exist"
      mkdir -p "$WORK/rootfs$(dirname "$path")"
      cp -rL "$path" "$WORK/rootfs$path"
    done
    build_from_rootfs "$tag" "/bin/$name"
    exit 0
    ;;
esac

TAG=logpipe:latest BINARY= RUNTIME=
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --binary) BINARY=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

ARGS=(--format docker -f deploy/container/Dockerfile -t "$TAG")
if [ "$RUNTIME" = host ]; then
  [ -n "$BINARY" ] || die "--runtime host needs --binary: the binary must link this machine's libraries"
  RUNTIME="localhost/logpipe-runtime-host:latest"
  rootfs "$WORK/rootfs" "$BINARY"
  build_from_rootfs "$RUNTIME" >/dev/null
fi
[ -z "$RUNTIME" ] || ARGS+=(--build-arg "RUNTIME_IMAGE=$RUNTIME")

if [ -n "$BINARY" ]; then
  [ -x "$BINARY" ] || die "--binary $BINARY is not an executable file"
  mkdir -p "$WORK/context/data"
  strip -o "$WORK/context/logpipe" "$BINARY" 2>/dev/null || cp -L "$BINARY" "$WORK/context/logpipe"
  "$ENGINE" build "${ARGS[@]}" --build-arg BINARY=context "$WORK/context"
else
  "$ENGINE" build "${ARGS[@]}" .
fi
