#!/usr/bin/env bash
# kube-up.sh brings up, from nothing, a single-node Kubernetes cluster for
# the e2e-kube suite in a network namespace of its own ($KUBE_NETNS): etcd,
# containerd + runc + the containernetworking plugins from Debian, and
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy (nftables mode) built by hack/tools.sh. Every process runs in
# that namespace, which has no link or route to the host's namespace: the
# node IP is on a veth pair whose both ends stay inside, pods get IPs from the
# bridge + host-local plugins, and kube-proxy programs the ClusterIPs.
# All state lives in $KUBESKEL_KUBE_WORK (default test/kube/.work); every
# process is recorded in pids/ so hack/kube-down.sh can stop it by PID.
#
#   hack/kube-up.sh            # then: source test/kube/.work/env.sh
set -o errexit -o pipefail -o nounset
# shellcheck source=hack/kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

DEBIAN_PACKAGES=(etcd-server containerd runc containernetworking-plugins nftables)

install_packages() {
  local missing=() p
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return
  kube_log "installing Debian packages: ${missing[*]}"
  # policy-rc.d keeps the packages' own services from starting, on machines
  # that have an init system.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$KUBE_LOGS/apt.log" 2>&1 ||
    { apt-get update -qq >>"$KUBE_LOGS/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$KUBE_LOGS/apt.log" 2>&1; } ||
    { cat "$KUBE_LOGS/apt.log" >&2; kube_die "apt-get install ${missing[*]} failed"; }
}

# netns_up creates the node's network namespace: loopback, the node IP on a
# veth pair with both ends inside, and a route for the service CIDR (without
# it a connection to a ClusterIP fails with "Network is unreachable" before
# kube-proxy's NAT sees it). It then asserts the namespace is isolated.
netns_up() {
  if [[ -e $KUBE_NETNS_PATH ]]; then
    kube_log "network namespace $KUBE_NETNS left from an earlier run; deleting it"
    ip netns delete "$KUBE_NETNS" || kube_die "ip netns delete $KUBE_NETNS failed"
  fi
  # /run/netns is made by `ip netns add` as a bind mount on itself; down
  # unmounts and removes it only when it was not there before.
  record_outside /run/netns
  # The pods' namespaces (cni-*) there that this run did not create.
  compgen -G '/run/netns/cni-*' >"$KUBE_WORK/cni-netns-before" || true
  ip netns add "$KUBE_NETNS" || kube_die "ip netns add $KUBE_NETNS failed"
  kube_ns ip link set lo up
  kube_ns ip link add "$KUBE_NODE_IF" type veth peer name "${KUBE_NODE_IF}p"
  kube_ns ip addr add "$KUBE_NODE_IP/24" dev "$KUBE_NODE_IF"
  kube_ns ip link set "$KUBE_NODE_IF" up
  kube_ns ip link set "${KUBE_NODE_IF}p" up
  kube_ns ip route add "$KUBE_SERVICE_CIDR" dev "$KUBE_NODE_IF" src "$KUBE_NODE_IP"
  kube_check_isolated created || kube_die "network namespace $KUBE_NETNS is not isolated"
  # Control: with a default route the same check must fail.
  kube_ns ip route add default dev "$KUBE_NODE_IF"
  if kube_check_isolated created 2>/dev/null; then
    kube_die "control: kube_check_isolated passed a namespace with a default route"
  fi
  kube_log "control: the isolation check fails once a default route is added"
  kube_ns ip route del default dev "$KUBE_NODE_IF"
  kube_check_isolated created || kube_die "network namespace $KUBE_NETNS is not isolated after the control"
  kube_log "network namespace $KUBE_NETNS: node IP $KUBE_NODE_IP on $KUBE_NODE_IF, no default route, links: $(kube_ns ip -o link show | awk -F': ' '{printf "%s ", $2}')"
}

# record_outside PATH: note PATH as created by this cluster when it does not
# exist yet, so kube-down.sh removes it afterwards.
record_outside() {
  [[ -e $1 ]] || echo "$1" >>"$KUBE_CREATED"
}

# start NAME COMMAND...: run a component in the node's network namespace, in
# its own session (so a Ctrl-C on make leaves the ordered teardown to
# kube-down.sh), log to logs/NAME.log. setsid and nsenter both exec, so the
# recorded PID is the component's.
start() {
  local name=$1; shift
  setsid nsenter --net="$KUBE_NETNS_PATH" -- "$@" >"$KUBE_LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$KUBE_PIDS/$name.pid"
  kube_log "started $name (pid $!)"
}

# alive_or_die NAME: fail with the component's log when it has exited.
alive_or_die() {
  kube_alive "$1" && return
  tail -n 40 "$KUBE_LOGS/$1.log" >&2 || true
  kube_die "$1 exited during start-up; log: $KUBE_LOGS/$1.log"
}

wait_for() {
  local name=$1 what=$2 secs=$3; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive_or_die "$name"
    if ((SECONDS >= deadline)); then
      tail -n 40 "$KUBE_LOGS/$name.log" >&2 || true
      kube_die "timed out after ${secs}s waiting for $what; log: $KUBE_LOGS/$name.log"
    fi
    sleep 0.2
  done
  kube_log "$what"
}

# PKI: one CA (EC P-256 keys, valid two days) signs every serving and client
# certificate; the service-account key pair is separate.
pki() {
  local d=$KUBE_PKI
  mkdir -p "$d"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -subj /CN=kubeskel-e2e-ca -days 2 -out "$d/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/sa.key" 2>/dev/null
  openssl ec -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  cert apiserver /CN=kube-apiserver serverAuth \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:${KUBE_SERVICE_CIDR%.0/*}.1"
  cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  cert controller-manager /CN=system:kube-controller-manager clientAuth
  cert scheduler /CN=system:kube-scheduler clientAuth
  cert kubelet "/O=system:nodes/CN=system:node:$KUBE_NODE" clientAuth
  cert kubelet-serving "/CN=$KUBE_NODE" serverAuth "subjectAltName=IP:$KUBE_NODE_IP,DNS:$KUBE_NODE"
  cert kube-proxy /CN=system:kube-proxy clientAuth
}

# cert NAME SUBJECT USAGE [EXTRA-EXTENSION]
cert() {
  local d=$KUBE_PKI name=$1 subj=$2 usage=$3 extra=${4:-}
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/$name.key" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n $extra ]] && echo "$extra"
  } >"$d/$name.ext"
  openssl req -new -key "$d/$name.key" -subj "$subj" 2>/dev/null |
    openssl x509 -req -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
}

# kubeconfig NAME: a kubeconfig for the client certificate pki/NAME.
kubeconfig() {
  cat >"$KUBE_WORK/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubeskel-e2e
  cluster:
    server: https://127.0.0.1:$KUBE_APISERVER_PORT
    certificate-authority: $KUBE_PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $KUBE_PKI/$1.crt
    client-key: $KUBE_PKI/$1.key
contexts:
- name: kubeskel-e2e
  context: {cluster: kubeskel-e2e, user: $1}
current-context: kubeskel-e2e
EOF
}

containerd_config() {
  mkdir -p "$KUBE_WORK/cni/net.d" "$KUBE_WORK/containerd"
  # Pods on a bridge in the node's namespace, IPs from host-local (its
  # allocations under the work folder). kube-proxy does the Service NAT, so
  # no masquerade here; hairpin lets a pod reach itself through a ClusterIP.
  cat >"$KUBE_WORK/cni/net.d/10-$KUBE_CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$KUBE_CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$KUBE_CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$KUBE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$KUBE_WORK/cni/ipam"
      }
    }
  ]
}
EOF
  # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so without it
  # every sandbox fails ("can't get final child's PID from pipe: EOF").
  cat >"$KUBE_WORK/containerd/config.toml" <<EOF
version = 2
root = "$KUBE_WORK/containerd/root"
state = "$KUBE_WORK/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$KUBE_CONTAINERD_SOCK"

[debug]
  level = "debug"
  format = "json"

[plugins."io.containerd.internal.v1.opt"]
  path = "$KUBE_WORK/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$KUBE_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "$KUBE_NODE_IP"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$KUBE_WORK/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$KUBE_WORK/cni/net.d"
EOF
}

kubelet_config() {
  mkdir -p "$KUBE_KUBELET_ROOT" "$KUBE_POD_LOGS"
  cat >"$KUBE_WORK/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $KUBE_NODE_IP
port: $KUBE_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBE_KUBELET_HEALTHZ_PORT
tlsCertFile: $KUBE_PKI/kubelet-serving.crt
tlsPrivateKeyFile: $KUBE_PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $KUBE_PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$KUBE_CONTAINERD_SOCK
podLogsDir: $KUBE_POD_LOGS
# cgroup v1, no systemd, no CAP_SYS_RESOURCE: cgroupfs without QoS cgroups.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
makeIPTablesUtilChains: false
failSwapOn: false
# The images are imported by hand and cannot be pulled again.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
serializeImagePulls: false
# JSON with millisecond times; verbosity 3 logs the preStop hook and the
# container kill, which the suite's timeline reads.
logging:
  format: json
  verbosity: 3
EOF
}

# kube_proxy_config: nftables mode. In a non-initial network namespace
# nf_conntrack_max is read-only, so kube-proxy must not touch the conntrack
# sysctls (maxPerCore, min and both TCP timeouts 0); oomScoreAdj 0 because
# root here lacks CAP_SYS_RESOURCE.
kube_proxy_config() {
  cat >"$KUBE_WORK/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clusterCIDR: $KUBE_POD_CIDR
hostnameOverride: $KUBE_NODE
clientConnection:
  kubeconfig: $KUBE_WORK/kube-proxy.kubeconfig
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
EOF
}

main() {
  if [[ -d $KUBE_PIDS ]] && compgen -G "$KUBE_PIDS/*.pid" >/dev/null; then
    kube_log "a previous cluster's state is in $KUBE_WORK; tearing it down first"
    "$(dirname "$0")/kube-down.sh"
  fi
  ((${#KUBE_CONTAINERD_SOCK} < 100)) ||
    kube_die "work folder path too long for a unix socket: $KUBE_CONTAINERD_SOCK (set KUBESKEL_KUBE_WORK)"
  [[ $(id -u) == 0 ]] || kube_die "needs root (containerd, runc, mounts, cgroups)"
  if awk -v w="$KUBE_WORK/" 'index($5, w) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
    kube_die "mounts remain under $KUBE_WORK from an earlier run; unmount them (or run hack/kube-down.sh)"
  fi
  rm -rf "$KUBE_WORK"
  mkdir -p "$KUBE_LOGS" "$KUBE_PIDS" "$KUBE_RUN"
  : >"$KUBE_CREATED"
  install_packages
  netns_up

  local bin
  bin=$("$KUBE_REPO/hack/tools.sh" kube-bin-dir)
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
    [[ -x $bin/$b ]] || kube_die "$bin/$b missing"
  done

  # What the kubelet and runc create outside --root-dir, recorded before
  # anything runs so that down removes only what this cluster made.
  record_outside /var/log/containers
  record_outside /var/lib/kubelet
  record_outside /var/lib/kubelet/device-plugins
  record_outside /run/containerd
  # libcni's cache of the pods' CNI results.
  record_outside /var/lib/cni
  local c
  for c in /sys/fs/cgroup/*/; do record_outside "${c}k8s.io"; done

  kube_log "generating PKI and configuration in $KUBE_WORK"
  pki
  for c in admin controller-manager scheduler kubelet kube-proxy; do kubeconfig "$c"; done
  containerd_config
  kubelet_config
  kube_proxy_config
  cat >"$KUBE_WORK/env.sh" <<EOF
# source this file to talk to the e2e-kube cluster; run kubectl, helm and
# curl in its network namespace: nsenter --net=$KUBE_NETNS_PATH -- kubectl ...
export KUBECONFIG=$KUBE_ADMIN_KUBECONFIG
export CONTAINERD_ADDRESS=$KUBE_CONTAINERD_SOCK
export CONTAINERD_NAMESPACE=k8s.io
export PATH=$bin:\$PATH
export KUBECACHEDIR=$KUBECACHEDIR
export HELM_CACHE_HOME=$HELM_CACHE_HOME HELM_CONFIG_HOME=$HELM_CONFIG_HOME HELM_DATA_HOME=$HELM_DATA_HOME
EOF

  start etcd etcd --name e2e --data-dir "$KUBE_WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
    --initial-cluster "e2e=http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
    --listen-metrics-urls "" --log-level warn
  start containerd containerd --config "$KUBE_WORK/containerd/config.toml"
  wait_for etcd "etcd healthy" 30 kube_ns curl -fsS "http://127.0.0.1:$KUBE_ETCD_PORT/health"

  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$KUBE_ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_APISERVER_PORT" \
    --tls-cert-file "$KUBE_PKI/apiserver.crt" --tls-private-key-file "$KUBE_PKI/apiserver.key" \
    --client-ca-file "$KUBE_PKI/ca.crt" \
    --service-account-key-file "$KUBE_PKI/sa.pub" \
    --service-account-signing-key-file "$KUBE_PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$KUBE_SERVICE_CIDR" \
    --authorization-mode Node,RBAC \
    --kubelet-client-certificate "$KUBE_PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$KUBE_PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --endpoint-reconciler-type none \
    --allow-privileged \
    --profiling=false
  local kubectl=(kube_ns "$bin/kubectl" --kubeconfig "$KUBE_ADMIN_KUBECONFIG")
  wait_for kube-apiserver "kube-apiserver ready" 90 "${kubectl[@]}" get --raw /readyz

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$KUBE_WORK/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$KUBE_WORK/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$KUBE_WORK/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KUBE_CM_PORT" \
    --leader-elect=false \
    --allocate-node-cidrs=false \
    --service-account-private-key-file "$KUBE_PKI/sa.key" \
    --root-ca-file "$KUBE_PKI/ca.crt" \
    --use-service-account-credentials \
    --profiling=false
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$KUBE_WORK/scheduler.kubeconfig" \
    --authentication-kubeconfig "$KUBE_WORK/scheduler.kubeconfig" \
    --authorization-kubeconfig "$KUBE_WORK/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KUBE_SCHEDULER_PORT" \
    --leader-elect=false \
    --profiling=false

  wait_for containerd "containerd serving" 30 kube_ns ctr --address "$KUBE_CONTAINERD_SOCK" version
  # The pause image must be there before the kubelet starts its first pod.
  "$KUBE_REPO/hack/kube-images.sh" pause

  start kubelet "$bin/kubelet" \
    --config "$KUBE_WORK/kubelet.yaml" \
    --kubeconfig "$KUBE_WORK/kubelet.kubeconfig" \
    --root-dir "$KUBE_KUBELET_ROOT" \
    --hostname-override "$KUBE_NODE" \
    --node-ip "$KUBE_NODE_IP"
  wait_for kubelet "node $KUBE_NODE Ready" 90 \
    "${kubectl[@]}" wait --for=condition=Ready "node/$KUBE_NODE" --timeout=1s
  # Scheduling needs the not-ready taint gone and the default service account
  # to exist; both come from the controller manager.
  wait_for kube-controller-manager "node untainted" 60 \
    kube_ns bash -c "[[ -z \$('$bin/kubectl' --kubeconfig '$KUBE_ADMIN_KUBECONFIG' get node $KUBE_NODE -o jsonpath='{.spec.taints}') ]]"
  wait_for kube-controller-manager "service account default/default exists" 60 \
    "${kubectl[@]}" -n default get serviceaccount default
  # kube-proxy reads its node (and so the node IP) from the apiserver; the
  # first nftables sync logs "Failed to list existing sets": harmless.
  start kube-proxy "$bin/kube-proxy" --config "$KUBE_WORK/kube-proxy.yaml"
  wait_for kube-proxy "kube-proxy healthy" 60 kube_ns curl -fsS "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
  wait_for kube-proxy "kube-proxy's nftables table programmed" 30 kube_ns nft list table ip kube-proxy
  kube_log "cluster up; source $KUBE_WORK/env.sh"
}

main "$@"
