#!/usr/bin/env bash
# kube-e2e.sh is `make e2e-kube`: bring up the single-node cluster in its own
# network namespace, build and import the kubeskel image, run the e2e-kube
# suite (test/kube, build tag kube) in that namespace against the real chart,
# and always tear the cluster down. KUBE_E2E_RUN narrows the steps for local
# work (a -test.run pattern such as 'TestKube/(install|clusterip-routing)$';
# later steps need the release the blocking ones leave). On failure
# it prints the tail of every component's log; the full logs and the printed
# timelines stay in $KUBESKEL_KUBE_WORK/logs and .../artifacts.
set -o errexit -o pipefail -o nounset
# shellcheck source=hack/kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

# dump_logs prints the tail of every component's log, without the kubelet's
# -v=3 chatter (successful probes, housekeeping).
dump_logs() {
  local f
  for f in "$KUBE_LOGS"/*.log; do
    [[ -f $f ]] || continue
    echo "===== last 60 lines of $f"
    grep -vE '"msg":"(Probe succeeded|Clean up|Eviction manager|FileSystem detection)' "$f" | tail -n 60
  done >&2
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)); then
    kube_log "e2e-kube failed (exit $rc); component logs follow"
    dump_logs
  fi
  "$KUBE_REPO/hack/kube-down.sh" || rc=1
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

cd "$KUBE_REPO"
# Cold, these build helm and Kubernetes from the module proxy (minutes);
# warm they only print the cached paths.
HELM=$(hack/tools.sh helm)
BIN=$(hack/tools.sh kube-bin-dir)
hack/tools.sh otelcol >/dev/null

start=$SECONDS
hack/kube-up.sh
hack/kube-images.sh kubeskel
hack/kube-images.sh otelcol
kube_log "cluster and images ready in $((SECONDS - start))s"

# The test binary is built here (the Go toolchain may need the module
# proxy) and run in the node's namespace, where every address it uses lives;
# kubectl and helm, its children, run there too.
go test -c -tags kube -o "$KUBE_WORK/kube.test" ./test/kube/
(
  cd test/kube
  KUBESKEL_KUBE_WORK=$KUBE_WORK KUBESKEL_KUBECTL=$BIN/kubectl KUBESKEL_HELM=$HELM \
    kube_ns "$KUBE_WORK/kube.test" -test.count=1 -test.v -test.timeout 25m -test.run "${KUBE_E2E_RUN:-.}"
)
# The suite ran with no way out of the namespace: check that it still has none.
kube_check_isolated running || kube_die "network namespace $KUBE_NETNS gained a route or link out"
kube_log "e2e-kube passed in $((SECONDS - start))s"
