# shellcheck shell=bash disable=SC2034 # variables for the scripts that source this file
# kube-lib.sh is sourced by the hack/kube-*.sh scripts: the layout of the
# single-node test cluster's work folder, its ports and a few helpers.
# Everything the cluster writes lives under $KUBE_WORK, except what the
# kubelet and runc hard-code (see kube-down.sh, which removes that too).

KUBE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBE_WORK=${KUBESKEL_KUBE_WORK:-$KUBE_REPO/test/kube/.work}

# The node's network namespace. Every cluster process, kubectl, helm and the
# suite's test binary run in it (nsenter --net, see kube_ns); it has no link
# or route to the host's namespace, so no packet of the suite leaves it.
# `ip netns exec` is not used: it remounts /sys privately, and the kubelet
# then finds no cgroup mounts.
KUBE_NETNS=${KUBESKEL_KUBE_NETNS:-kubeskel-e2e}
KUBE_NETNS_PATH=/run/netns/$KUBE_NETNS
# Addresses, used only inside that namespace: the node IP sits on one end of
# a veth pair whose two ends both stay in the namespace (the kernel here has
# no dummy driver); pods get KUBE_POD_CIDR from the bridge + host-local CNI
# plugins on KUBE_CNI_BRIDGE; Services get ClusterIPs from KUBE_SERVICE_CIDR,
# routed to node0 so kube-proxy's NAT sees them.
KUBE_NODE_IF=node0
KUBE_NODE_IP=10.250.0.1
KUBE_POD_CIDR=10.244.0.0/24
KUBE_SERVICE_CIDR=10.96.0.0/24
KUBE_CNI_BRIDGE=kubeskel0
KUBE_CNI_NETWORK=kubeskel-e2e
KUBE_PROXY_METRICS_PORT=${KUBESKEL_KUBE_PROXY_METRICS_PORT:-10249}
KUBE_PROXY_HEALTHZ_PORT=${KUBESKEL_KUBE_PROXY_HEALTHZ_PORT:-10256}

# Ports, on 127.0.0.1 inside the node's namespace, and away from the defaults.
KUBE_ETCD_PORT=${KUBESKEL_KUBE_ETCD_PORT:-12379}
KUBE_ETCD_PEER_PORT=${KUBESKEL_KUBE_ETCD_PEER_PORT:-12380}
KUBE_APISERVER_PORT=${KUBESKEL_KUBE_APISERVER_PORT:-16443}
KUBE_KUBELET_PORT=${KUBESKEL_KUBE_KUBELET_PORT:-10350}
KUBE_KUBELET_HEALTHZ_PORT=${KUBESKEL_KUBE_KUBELET_HEALTHZ_PORT:-10348}
KUBE_CM_PORT=${KUBESKEL_KUBE_CM_PORT:-10357}
KUBE_SCHEDULER_PORT=${KUBESKEL_KUBE_SCHEDULER_PORT:-10359}

# The node's name; the apiserver reaches the kubelet at its InternalIP,
# KUBE_NODE_IP (--kubelet-preferred-address-types InternalIP).
KUBE_NODE=e2e-node
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

# kube_ns COMMAND...: run COMMAND in the node's network namespace.
kube_ns() { nsenter --net="$KUBE_NETNS_PATH" -- "$@"; }

kube_ctr() { kube_ns ctr --address "$KUBE_CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# kube_check_isolated created|running: whether the node's namespace has no route or
# link out to the host's namespace. It must have no default route and no
# route through any interface but lo, the node veth pair and the pods'
# bridge. Right after creation it allows only lo and the node veth
# pair, neither with a peer in another namespace; otherwise the CNI bridge
# and the pods' veths (their peers are in the pods' namespaces) may be there
# too. Prints what is wrong.
kube_check_isolated() {
  local strict='' bad=0 name rest
  [[ $1 == created ]] && strict=1
  if [[ -n $(kube_ns ip route show default) ]]; then
    kube_log "namespace $KUBE_NETNS has a default route: $(kube_ns ip route show default)"
    bad=1
  fi
  if [[ -n $(kube_ns ip -6 route show default) ]]; then
    kube_log "namespace $KUBE_NETNS has an IPv6 default route"
    bad=1
  fi
  while IFS= read -r line; do
    name=$(awk -F': ' '{print $2}' <<<"$line"); name=${name%%@*}
    rest=$line
    case $name in
      lo) ;;
      "$KUBE_NODE_IF" | "${KUBE_NODE_IF}p")
        if [[ $rest == *link-netns* ]]; then
          kube_log "namespace $KUBE_NETNS: $name has its peer in another namespace"
          bad=1
        fi ;;
      "$KUBE_CNI_BRIDGE" | veth*)
        if [[ -n $strict ]]; then
          kube_log "namespace $KUBE_NETNS: unexpected link $name at creation"
          bad=1
        fi ;;
      *) kube_log "namespace $KUBE_NETNS: unexpected link $name"; bad=1 ;;
    esac
  done < <(kube_ns ip -o link show)
  local dev
  for dev in $(kube_ns ip -o route show table all | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | sort -u); do
    case $dev in
      lo | "$KUBE_NODE_IF" | "${KUBE_NODE_IF}p" | "$KUBE_CNI_BRIDGE") ;;
      veth*) [[ -z $strict ]] || { kube_log "namespace $KUBE_NETNS: route through $dev at creation"; bad=1; } ;;
      *) kube_log "namespace $KUBE_NETNS: route through unexpected device $dev"; bad=1 ;;
    esac
  done
  return "$bad"
}
