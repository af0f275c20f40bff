#!/usr/bin/env bash
# kube-down.sh tears down the cluster that hack/kube-up.sh started: every
# process by the PID it recorded, then the containers' leftovers (shims,
# mounts, cgroups, the pods' network namespaces and CNI results), the node's
# network namespace (with it its links and kube-proxy's nftables table), and
# what the kubelet writes outside the work folder.
# Logs stay in $KUBESKEL_KUBE_WORK/logs; all other state is removed.
# Safe to run twice, or after a failed or partial kube-up.sh.
set -o nounset
# shellcheck source=hack/kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

# stop NAME [SECONDS]: SIGTERM the recorded process, SIGKILL it after SECONDS.
stop() {
  local f=$KUBE_PIDS/$1.pid secs=${2:-10} pid
  [[ -s $f ]] || return 0
  pid=$(<"$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    local deadline=$((SECONDS + secs))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kube_log "$1 (pid $pid) ignored SIGTERM for ${secs}s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    kube_log "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}

# shim_pids: the containerd-shim processes serving our containerd, found by
# the socket address only ours has on its command line.
shim_pids() {
  local p
  for p in /proc/[0-9]*; do
    [[ -r $p/cmdline ]] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "-address $KUBE_CONTAINERD_SOCK " &&
      echo "${p#/proc/}"
  done
}

# remove_containers kills and deletes every container of our containerd, so
# that the shims exit and runc removes its cgroups.
remove_containers() {
  [[ -S $KUBE_CONTAINERD_SOCK ]] && kube_alive containerd || return 0
  local id
  for id in $(kube_ctr tasks ls -q 2>/dev/null); do
    kube_ctr tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1
  done
  for id in $(kube_ctr tasks ls -q 2>/dev/null); do
    # A failure here is often the CRI plugin deleting the same task;
    # whatever is really left shows up as a mount or cgroup below.
    kube_ctr tasks delete --force "$id" >/dev/null 2>&1
  done
  for id in $(kube_ctr containers ls -q 2>/dev/null); do
    kube_ctr containers delete "$id" >/dev/null 2>&1 || kube_log "ctr containers delete $id failed"
  done
}

# unmount_work unmounts everything mounted below the work folder (container
# rootfs overlays, sandbox shm, kubelet volume tmpfs), deepest first.
unmount_work() {
  local m
  awk -v w="$KUBE_WORK/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || kube_log "cannot unmount $m"
    done
}

# remove_cgroups removes the cgroups runc made under every hierarchy's
# k8s.io, children first; rmdir refuses a cgroup that still has tasks.
remove_cgroups() {
  local c
  for c in /sys/fs/cgroup/*/k8s.io; do
    [[ -d $c ]] || continue
    find "$c" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
    grep -qxF "$c" "$KUBE_CREATED" 2>/dev/null && rmdir "$c" 2>/dev/null
    [[ -d $c ]] && find "$c" -mindepth 1 -type d | grep -q . && kube_log "cgroups left under $c"
  done
}

# remove_pod_netns unmounts and removes the pods' network namespaces
# (/run/netns/cni-*) that this run created and containerd did not tear down
# (it does for pods removed through the CRI, not for containers killed here),
# and libcni's cached results for those pods.
remove_pod_netns() {
  local before=$KUBE_WORK/cni-netns-before n
  [[ -f $before ]] || return 0
  for n in /run/netns/cni-*; do
    [[ -e $n ]] || continue
    grep -qxF "$n" "$before" && continue
    umount "$n" 2>/dev/null
    rm -f "$n" || kube_log "cannot remove $n"
  done
  # Results are named <network>-<sandbox id>-<interface>; containerd adds
  # its own loopback network (cni-loopback) for the same sandboxes.
  local r id
  for r in /var/lib/cni/results/"$KUBE_CNI_NETWORK"-*; do
    [[ -e $r ]] || continue
    id=${r#/var/lib/cni/results/"$KUBE_CNI_NETWORK"-}; id=${id%-*}
    rm -f "$r" /var/lib/cni/results/cni-loopback-"$id"-lo
  done
}

# remove_node_netns deletes the node's namespace, and /run/netns when up
# created it: `ip netns add` leaves it a bind mount on itself.
remove_node_netns() {
  if [[ -e $KUBE_NETNS_PATH ]]; then
    ip netns delete "$KUBE_NETNS" || kube_log "ip netns delete $KUBE_NETNS failed"
  fi
  grep -qxF /run/netns "$KUBE_CREATED" 2>/dev/null || return 0
  [[ -d /run/netns ]] || return 0
  local left
  left=$(find /run/netns -mindepth 1 -maxdepth 1 -printf '%f ')
  if [[ -n $left ]]; then
    kube_log "/run/netns is not empty ($left); leaving it"
    return 0
  fi
  while mountpoint -q /run/netns; do umount /run/netns || { kube_log "cannot unmount /run/netns"; return 0; }; done
  rmdir /run/netns || kube_log "cannot remove /run/netns"
}

# remove_outside removes what the kubelet writes outside its root dir: the
# /var/log/containers links into our pod logs, and the directories that up
# recorded as created (deepest first).
remove_outside() {
  local l
  if [[ -d /var/log/containers ]]; then
    for l in /var/log/containers/*; do
      [[ -L $l ]] && [[ $(readlink "$l") == "$KUBE_POD_LOGS/"* ]] && rm -f "$l"
    done
  fi
  [[ -f $KUBE_CREATED ]] || return 0
  local p
  sort -r "$KUBE_CREATED" | while read -r p; do
    case $p in
      /sys/fs/cgroup/*) ;;  # remove_cgroups
      /run/netns) ;;  # remove_node_netns
      # Shim sockets go to /run/containerd/s whatever the state dir; the
      # shims remove their own, leaving empty directories.
      /run/containerd) find /run/containerd -depth -type d -empty -delete 2>/dev/null ;;
      *) rm -rf "$p" ;;
    esac
  done
}

main() {
  [[ -d $KUBE_WORK ]] || return 0
  # The kubelet first, so nothing restarts containers; the control plane's
  # three take about 2 s each to stop, so they go together.
  stop kubelet 15
  stop kube-proxy &
  stop kube-scheduler &
  stop kube-controller-manager &
  stop kube-apiserver &
  wait
  remove_containers
  stop containerd
  local pid
  for pid in $(shim_pids); do
    kube_log "killing leftover containerd-shim pid $pid"
    kill -KILL "$pid" 2>/dev/null
  done
  stop etcd
  unmount_work
  remove_cgroups
  remove_pod_netns
  remove_node_netns
  remove_outside
  if awk -v w="$KUBE_WORK/" 'index($5, w) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
    kube_log "mounts remain under $KUBE_WORK; not removing its state"
    return 1
  fi
  # Logs are kept for inspection; all other state goes.
  local d
  for d in "$KUBE_WORK"/*; do
    case ${d##*/} in
      logs | artifacts) ;;
      *) rm -rf "$d" ;;
    esac
  done
  kube_log "cluster down; logs in $KUBE_LOGS"
}

main "$@"
