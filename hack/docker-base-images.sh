#!/usr/bin/env bash
# docker-base-images.sh builds local stand-ins for the Dockerfile's two base
# images from what is on this machine, because no registry is reachable:
#
#   kubeskel-local/golang:<go version>   the machine's Go toolchain (GOROOT)
#                                        plus a shell and CA certificates,
#                                        imported from a tarball
#   kubeskel-local/static:nonroot        FROM scratch with CA certificates,
#                                        /etc/passwd and /etc/group entries
#                                        for nonroot (65532) and /tmp, like
#                                        distroless/static:nonroot
#
# It prints BUILDER_IMAGE=... and RUNTIME_IMAGE=... for the caller, and skips
# an image that already exists. Needs DOCKER_HOST (hack/docker-daemon.sh).
set -o errexit -o pipefail -o nounset

HERE=$(cd "$(dirname "$0")" && pwd)
GOROOT=$(go env GOROOT)
GOVERSION=$(go env GOVERSION)
BUILDER_IMAGE=kubeskel-local/golang:${GOVERSION#go}
RUNTIME_IMAGE=kubeskel-local/static:nonroot
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { echo "docker-base-images.sh: $*" >&2; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! exists "$BUILDER_IMAGE"; then
  log "importing $BUILDER_IMAGE from $GOROOT"
  root="$tmp/builder"
  mkdir -p "$root"/{bin,tmp,etc/ssl/certs,usr/local,go,root}
  chmod 1777 "$root/tmp"
  # /bin/sh runs the Dockerfile's RUN lines; dash and the loader it links.
  cp /bin/dash "$root/bin/sh"
  for lib in $(ldd /bin/dash | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  cp "$CA_BUNDLE" "$root/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  tar -C "$root" -cf "$tmp/builder.tar" .
  # The toolchain goes in as it is installed, without its tests and docs.
  tar -C "$(dirname "$GOROOT")" --exclude="$(basename "$GOROOT")/test" \
    --exclude="$(basename "$GOROOT")/doc" \
    --transform "s,^$(basename "$GOROOT"),usr/local/go," \
    -rf "$tmp/builder.tar" "$(basename "$GOROOT")"
  # The same environment as the official golang image, plus the proxy this
  # machine uses; GOTOOLCHAIN=local so go.mod never triggers a download.
  docker import \
    --change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV GOPATH=/go' \
    --change 'ENV GOTOOLCHAIN=local' \
    --change "ENV GOPROXY=$(go env GOPROXY)" \
    --change "ENV GOSUMDB=$(go env GOSUMDB)" \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'WORKDIR /go' \
    "$tmp/builder.tar" "$BUILDER_IMAGE" >/dev/null
fi

if ! exists "$RUNTIME_IMAGE"; then
  log "building $RUNTIME_IMAGE"
  ctx="$tmp/runtime"
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/rootfs/home/nonroot"
  cp "$CA_BUNDLE" "$ctx/rootfs/etc/ssl/certs/"
  cp "$HERE/base-images/runtime/passwd" "$HERE/base-images/runtime/group" "$ctx/rootfs/etc/"
  chmod 1777 "$ctx/rootfs/tmp"
  chown 65532:65532 "$ctx/rootfs/home/nonroot"
  cp "$HERE/base-images/runtime/Dockerfile" "$ctx/Dockerfile"
  docker build --quiet --network none -t "$RUNTIME_IMAGE" "$ctx" >/dev/null
fi

echo "BUILDER_IMAGE=$BUILDER_IMAGE"
echo "RUNTIME_IMAGE=$RUNTIME_IMAGE"
