#!/usr/bin/env bash
# kube-images.sh builds the e2e-kube cluster's images without any registry
# and imports them into its containerd (namespace k8s.io):
#
#   hack/kube-images.sh pause      kubeskel.local/pause:e2e, the pod sandbox
#   hack/kube-images.sh kubeskel   kubeskel.local/kubeskel:e2e, the service
#   hack/kube-images.sh otelcol    kubeskel.local/otelcol:e2e, the OpenTelemetry
#                                  Collector (hack/tools.sh otelcol) the sidecar
#                                  steps run in the chart's native-sidecar slot
#
# By default each is a static Go binary packed FROM scratch into a
# docker-archive tar (manifest.json + config + one layer), which
# `ctr images import` reads; the kubeskel one has the Dockerfile's layout.
# With KUBESKEL_KUBE_IMAGE_BUILD=docker the kubeskel image is built from the
# real Dockerfile instead, on the engine of hack/docker-daemon.sh, and moved
# over with `docker save`.
set -o errexit -o pipefail -o nounset
# shellcheck source=hack/kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

IMAGES=$KUBE_WORK/images
KUBESKEL_IMAGE=${KUBESKEL_KUBE_IMAGE:-kubeskel.local/kubeskel:e2e}
OTELCOL_IMAGE=kubeskel.local/otelcol:e2e

# pack REF ROOTFS CONFIG-JSON OUT: write a docker-archive of ROOTFS as one
# layer, tagged REF, with CONFIG-JSON as the image's runtime config.
pack() {
  local ref=$1 rootfs=$2 config=$3 out=$4
  local tmp
  tmp=$(mktemp -d "$IMAGES/pack.XXXXXX")
  tar --create --file "$tmp/layer.tar" --directory "$rootfs" \
    --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 .
  local diff
  diff=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
  mkdir "$tmp/$diff"
  mv "$tmp/layer.tar" "$tmp/$diff/layer.tar"
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$config" "$diff" >"$tmp/config.json"
  local cfg
  cfg=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
  mv "$tmp/config.json" "$tmp/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg" "$ref" "$diff" >"$tmp/manifest.json"
  tar --create --file "$out" --directory "$tmp" manifest.json "$cfg.json" "$diff/layer.tar"
  rm -rf "$tmp"
}

import() {
  local out
  out=$(kube_ctr images import --platform linux/amd64 "$1" 2>&1) || { echo "$out" >&2; kube_die "ctr images import $1 failed"; }
  kube_log "imported $(basename "$1"): ${out//$'\n'/ }"
}

pause_image() {
  local root=$IMAGES/pause/rootfs
  rm -rf "$root"; mkdir -p "$root"
  (cd "$KUBE_REPO" && CGO_ENABLED=0 go build -tags kube -trimpath -ldflags '-s -w' -o "$root/pause" ./test/kube/pause)
  pack "$KUBE_PAUSE_IMAGE" "$root" '{"Entrypoint":["/pause"],"User":"65535:65535"}' "$IMAGES/pause.tar"
  import "$IMAGES/pause.tar"
}

# kubeskel_image packs the binary built with the contract's flags the way the
# Dockerfile lays it out: /kubeskel as ENTRYPOINT, user 65532 (distroless's
# nonroot) with a passwd entry, CA certificates for outgoing TLS.
kubeskel_image() {
  local root=$IMAGES/kubeskel/rootfs
  local version
  version=$(cd "$KUBE_REPO" && git describe --tags --always --dirty 2>/dev/null || echo e2e)
  rm -rf "$root"; mkdir -p "$root/etc/ssl/certs" "$root/tmp"
  chmod 1777 "$root/tmp"
  (cd "$KUBE_REPO" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/kubeskel/kubeskel/internal/buildinfo.Version=$version" \
    -o "$root/kubeskel" ./cmd/kubeskel)
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  pack "$KUBESKEL_IMAGE" "$root" \
    '{"Entrypoint":["/kubeskel"],"User":"65532:65532","Env":["PATH=/"],"ExposedPorts":{"8080/tcp":{},"8081/tcp":{}}}' \
    "$IMAGES/kubeskel.tar"
  import "$IMAGES/kubeskel.tar"
}

# kubeskel_docker_image builds the Dockerfile with local stand-ins for its
# base images (hack/docker-base-images.sh) and imports the saved image.
kubeskel_docker_image() {
  local version DOCKER_HOST DOCKERD_PID BUILDER_IMAGE RUNTIME_IMAGE
  version=$(cd "$KUBE_REPO" && git describe --tags --always --dirty 2>/dev/null || echo e2e)
  eval "$("$KUBE_REPO/hack/docker-daemon.sh" start)"
  export DOCKER_HOST
  # shellcheck disable=SC2064 # stop the engine this call started, if any
  trap "[[ -n '$DOCKERD_PID' ]] && '$KUBE_REPO/hack/docker-daemon.sh' stop '$DOCKERD_PID'" EXIT
  eval "$("$KUBE_REPO/hack/docker-base-images.sh")"
  # Host network: the build stage downloads modules from the Go proxy.
  docker build --network host --quiet \
    --build-arg "BUILDER_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
    --build-arg "VERSION=$version" -t "$KUBESKEL_IMAGE" "$KUBE_REPO" >/dev/null
  docker save -o "$IMAGES/kubeskel.tar" "$KUBESKEL_IMAGE"
  import "$IMAGES/kubeskel.tar"
}

# otelcol_image packs the collector binary hack/tools.sh built (static, no
# cgo) alone, as /otelcol, run as the same non-root user as the app.
otelcol_image() {
  local root=$IMAGES/otelcol/rootfs bin
  bin=$("$KUBE_REPO/hack/tools.sh" otelcol)
  rm -rf "$root"; mkdir -p "$root"
  cp "$bin" "$root/otelcol"
  pack "$OTELCOL_IMAGE" "$root" '{"Entrypoint":["/otelcol"],"User":"65532:65532"}' "$IMAGES/otelcol.tar"
  import "$IMAGES/otelcol.tar"
}

mkdir -p "$IMAGES"
case "${1:-}" in
  pause) pause_image ;;
  otelcol) otelcol_image ;;
  kubeskel)
    case ${KUBESKEL_KUBE_IMAGE_BUILD:-pack} in
      pack) kubeskel_image ;;
      docker) kubeskel_docker_image ;;
      *) kube_die "KUBESKEL_KUBE_IMAGE_BUILD must be pack or docker" ;;
    esac ;;
  *) echo "usage: $0 pause|kubeskel|otelcol" >&2; exit 2 ;;
esac
