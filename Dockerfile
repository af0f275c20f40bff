# kubeskel container image: a static Go binary on a distroless base, run as
# a numeric non-root user so Kubernetes can verify runAsNonRoot.
#
#   docker build --build-arg VERSION=v1.2.3 -t kubeskel:v1.2.3 .
#
# Both base images are build arguments so that air-gapped builds (and
# hack/docker-e2e.sh, which has no registry) can substitute local stand-ins.
# The file uses no BuildKit-only syntax, so the legacy builder works too.

ARG BUILDER_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# Module downloads get their own layer: it is rebuilt only when go.mod or
# go.sum change, not on every source edit.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY cmd/ cmd/
COPY internal/ internal/
ARG VERSION=dev
# TARGETOS/TARGETARCH are set by buildx for multi-platform builds; empty
# values (the legacy builder) mean the builder's own platform.
ARG TARGETOS
ARG TARGETARCH
# The exact flags of docs/contract.md (same as the Makefile).
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X github.com/kubeskel/kubeskel/internal/buildinfo.Version=${VERSION}" \
      -o /out/kubeskel ./cmd/kubeskel

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kubeskel" \
      org.opencontainers.image.description="Go HTTP service skeleton that drains correctly on Kubernetes" \
      org.opencontainers.image.source="https://github.com/kubeskel/kubeskel" \
      org.opencontainers.image.url="https://github.com/kubeskel/kubeskel" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/kubeskel /kubeskel
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# Traffic and admin (probes, /metrics) ports; see docs/contract.md.
EXPOSE 8080 8081
# Exec form: no shell in the image. Orchestrators that ignore HEALTHCHECK
# (Kubernetes) use the chart's probes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/kubeskel", "probe", "http://127.0.0.1:8081/live"]
# Exec form, so kubeskel is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["/kubeskel"]
