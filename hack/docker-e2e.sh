#!/usr/bin/env bash
# docker-e2e.sh proves the Dockerfile: it builds the real Dockerfile on local
# stand-in base images, runs the image with host networking and checks a clean
# drain under `docker stop`. The work is in test/deploy/docker_e2e_test.go;
# this wrapper only runs it. Exit status is the test's.
set -o errexit -o pipefail -o nounset
cd "$(dirname "$0")/../test/deploy"
exec go test -tags e2e -count=1 -run '^TestDockerImage$' -v -timeout 30m .
