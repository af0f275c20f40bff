# kubeskel Makefile. `make help` lists the targets.
SHELL := /usr/bin/env bash -o errexit -o pipefail -o nounset
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables
.SUFFIXES:
.DEFAULT_GOAL := help

BIN       := kubeskel
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X github.com/kubeskel/kubeskel/internal/buildinfo.Version=$(VERSION)"
# Local runs: human-readable logs and a short drain, so Ctrl-C returns quickly.
RUN_ENV   ?= APP_LOG_FORMAT=text APP_PRESTOP_DELAY=1s

# @HELP build the static binary into bin/kubeskel
.PHONY: build
build:
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/$(BIN) ./cmd/$(BIN)

# @HELP run the service on :8080 (traffic) and :8081 (admin); Ctrl-C drains and exits
.PHONY: run
run: build
	env $(RUN_ENV) ./bin/$(BIN)

# @HELP vet, check formatting, and run every unit and real-process test with -race -shuffle=on
.PHONY: test
test:
	@test -z "$$(gofmt -l cmd internal test)" || { echo "gofmt needed:"; gofmt -l cmd internal test; exit 1; }
	go vet ./...
	go test -race -shuffle=on -count=1 ./...
	go vet -tags e2e ./test/e2e && go vet -tags bench ./test/bench/... && go vet -tags kube ./test/kube/...
	cd test/deploy && go vet ./... && go test -race -shuffle=on -count=1 ./...

# @HELP golangci-lint (both modules, all build tags), shellcheck on hack/ and .ci/, promtool on a live /metrics (apt-get install shellcheck prometheus)
.PHONY: lint
lint:
	hack/lint.sh

# @HELP the heavier proofs (CI variant): rolling restarts through HAProxy, then the deployment proofs
.PHONY: e2e
e2e: e2e-lb e2e-deploy

# @HELP rolling restarts through HAProxy under load, HTTP/1.1 and HTTP/2, with SSE clients, CI variant (~2 min; needs haproxy)
.PHONY: e2e-lb
e2e-lb:
	E2E_SHORT=1 go test -tags e2e -count=1 -v -timeout 10m ./test/e2e

# @HELP full rolling-restart run: 2 models x HTTP/1.1 and HTTP/2 x 60,000 requests, >= 6 restarts each (~5 min; needs haproxy)
.PHONY: e2e-full
e2e-full:
	go test -tags e2e -count=1 -v -timeout 20m ./test/e2e

# @HELP cost of the skeleton against bare net/http, printed as Markdown (~12 min; apt-get install wrk nghttp2-client valgrind)
.PHONY: bench
bench:
	hack/bench.sh

# @HELP regenerate k8s/ from charts/kubeskel with the pinned helm
.PHONY: manifests
manifests:
	hack/render-manifests.sh

# @HELP fail if k8s/ is out of date with charts/kubeskel
.PHONY: manifests-check
manifests-check:
	hack/render-manifests.sh --check

# @HELP build the container image (needs the golang and distroless base images, or local stand-ins)
.PHONY: image
image:
	docker build --build-arg VERSION=$(VERSION) -t kubeskel:$(VERSION) .

# @HELP deployment proofs: helm lint --strict, kube-apiserver admission under PSS restricted, Docker image drain
.PHONY: e2e-deploy
e2e-deploy:
	cd test/deploy && go test -tags e2e -count=1 -timeout 40m -v ./...

# @HELP real single-node Kubernetes on 127.0.0.1: install and roll the chart, check the drain (root; builds k8s v1.37.2 + helm on first use)
.PHONY: e2e-kube
e2e-kube:
	hack/kube-e2e.sh

# @HELP print this help
.PHONY: help
help:
	@echo "kubeskel make targets:"
	@awk '/^# @HELP / {sub(/^# @HELP /, ""); help=$$0; next} /^[a-z][a-z0-9-]*:/ && help != "" {split($$0, t, ":"); printf "  %-16s %s\n", t[1], help; help=""}' $(MAKEFILE_LIST)

# @HELP remove build output
.PHONY: clean
clean:
	rm -rf bin
