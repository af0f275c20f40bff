#!/usr/bin/env bash
# docker-daemon.sh starts a private Docker engine for the image tests, or
# reuses a reachable one. It prints shell assignments for the caller:
#
#   DOCKER_HOST=unix:///run/kubeskel-docker.sock
#   DOCKERD_PID=1234        (empty when an existing engine was reused)
#
#   hack/docker-daemon.sh start     start (or reuse) and print the above
#   hack/docker-daemon.sh stop PID  stop an engine this script started
#
# The engine uses host networking only (--bridge=none --iptables=false): the
# machine has no registry and tests talk to containers on 127.0.0.1. Debian's
# docker.io package is installed when dockerd is missing.
set -o errexit -o pipefail -o nounset

SOCK=${KUBESKEL_DOCKER_SOCK:-/run/kubeskel-docker.sock}
DATA_ROOT=${KUBESKEL_DOCKER_DATA:-/var/lib/kubeskel-docker}
EXEC_ROOT=${KUBESKEL_DOCKER_EXEC:-/run/kubeskel-docker}
LOG=${KUBESKEL_DOCKER_LOG:-/tmp/kubeskel-dockerd.log}

log() { echo "docker-daemon.sh: $*" >&2; }

reachable() { DOCKER_HOST="$1" docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  # An engine the caller already points at (DOCKER_HOST or the default
  # socket) is reused as it is.
  local h
  for h in "${DOCKER_HOST:-}" "unix://$SOCK" unix:///var/run/docker.sock; do
    if [[ -n "$h" ]] && reachable "$h"; then
      log "reusing the engine at $h"
      echo "DOCKER_HOST=$h"
      echo "DOCKERD_PID="
      return
    fi
  done
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    log "installing Debian's docker.io"
    apt-get install -y docker.io >&2 || { apt-get update >&2 && apt-get install -y docker.io >&2; }
  fi
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  rm -f "$SOCK"
  log "starting dockerd on $SOCK (log $LOG)"
  # setsid: the engine outlives this script; the caller stops it by PID.
  setsid dockerd \
    --host "unix://$SOCK" \
    --data-root "$DATA_ROOT" \
    --exec-root "$EXEC_ROOT" \
    --pidfile "$EXEC_ROOT/dockerd.pid" \
    --bridge=none --iptables=false --ip6tables=false \
    >"$LOG" 2>&1 </dev/null &
  local pid=$!
  local i
  for ((i = 0; i < 120; i++)); do
    if reachable "unix://$SOCK"; then
      echo "DOCKER_HOST=unix://$SOCK"
      echo "DOCKERD_PID=$pid"
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "dockerd exited; last log lines:"; tail -n 20 "$LOG" >&2; exit 1
    fi
    sleep 0.5
  done
  log "dockerd did not answer within 60s; last log lines:"; tail -n 20 "$LOG" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}

stop() {
  local pid=${1:?usage: $0 stop PID}
  kill -TERM "$pid" 2>/dev/null || return 0
  local i
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "dockerd $pid did not stop in 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop PID" >&2; exit 2 ;;
esac
