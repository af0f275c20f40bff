#!/usr/bin/env bash
# tools.sh builds the pinned third-party tools the heavier suites need, from
# the Go module proxy, into a cache keyed by version, and prints the path of
# the requested binary. Nothing is downloaded prebuilt.
#
#   hack/tools.sh helm                 -> path to helm v3.22.0
#   hack/tools.sh golangci-lint        -> path to golangci-lint v2.15.0
#   hack/tools.sh protoc-gen-go, protoc-gen-go-grpc, grpc-health-probe
#   hack/tools.sh kube-apiserver       -> path (also: kubectl, kubelet,
#                                         kube-controller-manager, kube-scheduler,
#                                         kube-proxy)
#   hack/tools.sh otelcol              -> path to an OpenTelemetry Collector
#                                         built by the Collector Builder
#                                         $OTELCOL_VERSION from hack/otelcol/builder.yaml
#
# The cache lives in ${KUBESKEL_CACHE:-$HOME/.cache/kubeskel}; delete it to rebuild.
set -o errexit -o pipefail -o nounset

HELM_VERSION=v3.22.0
GOLANGCI_LINT_VERSION=v2.15.0
KUBE_VERSION=v1.37.2
PROTOC_GEN_GO_VERSION=v1.36.12      # google.golang.org/protobuf, as in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
GRPC_HEALTH_PROBE_VERSION=v0.4.63
OTELCOL_VERSION=v0.161.0
CACHE=${KUBESKEL_CACHE:-${HOME:-/root}/.cache/kubeskel}
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)

log() { echo "tools.sh: $*" >&2; }

build_helm() {
  local dir="$CACHE/helm-$HELM_VERSION"
  if [[ ! -x "$dir/helm" ]]; then
    log "building helm $HELM_VERSION into $dir (about 4 minutes cold)"
    mkdir -p "$dir"
    CGO_ENABLED=0 GOBIN="$dir" GOFLAGS=-mod=mod go install -trimpath "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  echo "$dir/helm"
}

# build_golangci_lint builds golangci-lint from source, like helm: it is not
# in go.mod, so the linter's dependencies never mix with the service's.
build_golangci_lint() {
  local dir="$CACHE/golangci-lint-$GOLANGCI_LINT_VERSION"
  if [[ ! -x "$dir/golangci-lint" ]]; then
    log "building golangci-lint $GOLANGCI_LINT_VERSION into $dir (about 3 minutes cold)"
    mkdir -p "$dir"
    CGO_ENABLED=0 GOBIN="$dir" GOFLAGS=-mod=mod go install -trimpath \
      "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
  fi
  echo "$dir/golangci-lint"
}

# build_kube builds the Kubernetes binaries (they share most of the build)
# from a scratch module that maps every staging module to the matching v0.x
# release, as k8s.io/kubernetes' own go.mod does with paths. Only the
# binaries missing from the cache are built, so adding one to KUBE_BINARIES
# does not rebuild the others.
build_kube() {
  local dir="$CACHE/kubernetes-$KUBE_VERSION"
  local missing=() b
  for b in "${KUBE_BINARIES[@]}"; do [[ -x "$dir/bin/$b" ]] || missing+=("$b"); done
  if (( ${#missing[@]} )); then
    log "building Kubernetes $KUBE_VERSION ${missing[*]} into $dir (8-13 minutes cold for all six)"
    local mod="$dir/module" staging="v0.${KUBE_VERSION#v1.}"
    mkdir -p "$mod" "$dir/bin"
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module kubeskel.local/kubebuild"
      echo
      echo "go 1.26.0"
      echo
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo
      grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" |
        awk -v v="$staging" '{print "replace " $1 " v0.0.0 => " $1 " " v}'
    } > "$mod/go.mod"
    printf 'package kubebuild\n' > "$mod/doc.go"
    (
      cd "$mod"
      GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
      local pkgs=()
      for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
      GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$KUBE_VERSION" >&2
      CGO_ENABLED=0 GOBIN="$dir/bin" GOFLAGS=-mod=mod go install -trimpath \
        -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#v1.}" \
        "${pkgs[@]}"
    )
  fi
  echo "$dir/bin"
}

# build_go_tool builds one Go command at a pinned version into the cache,
# like helm: go install pkg@version never touches the service's go.mod.
build_go_tool() {
  local name=$1 pkg=$2 version=$3
  local dir="$CACHE/$name-$version"
  if [[ ! -x "$dir/$name" ]]; then
    log "building $name $version into $dir"
    mkdir -p "$dir"
    CGO_ENABLED=0 GOBIN="$dir" GOFLAGS=-mod=mod go install -trimpath "$pkg@$version"
  fi
  echo "$dir/$name"
}

# build_otelcol builds the collector that make e2e-kube runs as a native
# sidecar: the Collector Builder of OTELCOL_VERSION (itself from the module
# proxy) generates a main package from hack/otelcol/builder.yaml and compiles
# it with CGO_ENABLED=0 (the builder's default). The cache key holds the
# manifest's hash, so editing the manifest rebuilds.
build_otelcol() {
  local manifest
  manifest="$(cd "$(dirname "$0")" && pwd)/otelcol/builder.yaml"
  local dir
  dir="$CACHE/otelcol-$OTELCOL_VERSION-$(sha256sum "$manifest" | cut -c1-12)"
  if [[ ! -x "$dir/otelcol-kubeskel" ]]; then
    log "building the OpenTelemetry Collector $OTELCOL_VERSION into $dir (about 2-4 minutes cold)"
    mkdir -p "$dir/src"
    CGO_ENABLED=0 GOBIN="$dir/ocb" GOFLAGS=-mod=mod go install -trimpath \
      "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION"
    # output_path is set here, not in the manifest, so the manifest stays
    # free of machine paths; the generated go.mod lives next to the sources.
    sed "s|^dist:|dist:\n  output_path: $dir/src|" "$manifest" >"$dir/builder.yaml"
    CGO_ENABLED=0 GOFLAGS=-mod=mod "$dir/ocb/builder" --config="$dir/builder.yaml" >&2
    mv "$dir/src/otelcol-kubeskel" "$dir/otelcol-kubeskel"
  fi
  echo "$dir/otelcol-kubeskel"
}

case "${1:-}" in
  protoc-gen-go) build_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION" ;;
  protoc-gen-go-grpc) build_go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" ;;
  grpc-health-probe) build_go_tool grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe "$GRPC_HEALTH_PROBE_VERSION" ;;
  helm) build_helm ;;
  golangci-lint) build_golangci_lint ;;
  kube-bin-dir) build_kube ;;
  kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubectl|kube-proxy) echo "$(build_kube)/$1" ;;
  otelcol) build_otelcol ;;
  all) build_helm >/dev/null; build_golangci_lint >/dev/null; build_kube >/dev/null; build_otelcol >/dev/null ;;
  *) echo "usage: $0 protoc-gen-go|protoc-gen-go-grpc|grpc-health-probe|helm|golangci-lint|kube-bin-dir|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubectl|kube-proxy|otelcol|all" >&2; exit 2 ;;
esac
