# shellcheck shell=bash disable=SC2034 # variables for the scripts that source this file
# kube-lib.sh is sourced by the hack/kube-*.sh scripts: the layout of the
# single-node test cluster's work folder, its ports and a few helpers.
# Everything the cluster writes lives under $KUBE_WORK, except what the
# kubelet and runc hard-code (see kube-down.sh, which removes that too).

KUBE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBE_WORK=${KUBESKEL_KUBE_WORK:-$KUBE_REPO/test/kube/.work}

# Ports, all on 127.0.0.1 and away from the defaults so a real cluster or
# another suite on this machine does not collide with ours.
KUBE_ETCD_PORT=${KUBESKEL_KUBE_ETCD_PORT:-12379}
KUBE_ETCD_PEER_PORT=${KUBESKEL_KUBE_ETCD_PEER_PORT:-12380}
KUBE_APISERVER_PORT=${KUBESKEL_KUBE_APISERVER_PORT:-16443}
KUBE_KUBELET_PORT=${KUBESKEL_KUBE_KUBELET_PORT:-10350}
KUBE_KUBELET_HEALTHZ_PORT=${KUBESKEL_KUBE_KUBELET_HEALTHZ_PORT:-10348}
KUBE_CM_PORT=${KUBESKEL_KUBE_CM_PORT:-10357}
KUBE_SCHEDULER_PORT=${KUBESKEL_KUBE_SCHEDULER_PORT:-10359}

# The node's name, and so its Hostname address, which the apiserver uses to
# reach the kubelet (--kubelet-preferred-address-types Hostname). The kubelet
# takes it as InternalIP too; --node-ip 127.0.0.1 would be refused as loopback
# and leave the node with no address at all (no logs, no exec).
KUBE_NODE=127.0.0.1
KUBE_PAUSE_IMAGE=kubeskel.local/pause:e2e

KUBE_PKI=$KUBE_WORK/pki
KUBE_LOGS=$KUBE_WORK/logs
KUBE_PIDS=$KUBE_WORK/pids
KUBE_RUN=$KUBE_WORK/run
KUBE_CONTAINERD_SOCK=$KUBE_RUN/containerd.sock
KUBE_KUBELET_ROOT=$KUBE_WORK/kubelet
KUBE_POD_LOGS=$KUBE_WORK/pod-logs
KUBE_ADMIN_KUBECONFIG=$KUBE_WORK/admin.kubeconfig
# kubectl's and helm's caches stay in the work folder too, not in $HOME.
export KUBECACHEDIR=$KUBE_WORK/kubectl-cache
export HELM_CACHE_HOME=$KUBE_WORK/helm/cache
export HELM_CONFIG_HOME=$KUBE_WORK/helm/config
export HELM_DATA_HOME=$KUBE_WORK/helm/data
# Paths outside the work folder that up records as created, so down removes
# exactly those and nothing that was there before.
KUBE_CREATED=$KUBE_WORK/created-outside

kube_log() { printf '%s kube: %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
kube_die() { kube_log "FAIL: $*"; exit 1; }

# kube_alive NAME: whether the component recorded in pids/NAME.pid runs.
kube_alive() {
  local f=$KUBE_PIDS/$1.pid
  [[ -s $f ]] && kill -0 "$(<"$f")" 2>/dev/null
}

# kube_wait DESCRIPTION SECONDS COMMAND...: retry COMMAND every 0.2 s until it
# succeeds or SECONDS pass.
kube_wait() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      kube_log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

kube_ctr() { ctr --address "$KUBE_CONTAINERD_SOCK" --namespace k8s.io "$@"; }
