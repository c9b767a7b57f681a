#!/usr/bin/env bash
# hack/node.sh: a real node for the local control plane of hack/cluster.sh:
# containerd (runc) + kubelet, and the two control-plane parts that only a
# cluster with nodes needs: kube-scheduler and the Deployment/ReplicaSet
# controllers (a second kube-controller-manager). Pods really run here.
#
#   hack/node.sh build            build/cache kubelet, kube-scheduler and pause
#   hack/node.sh prepare          build, and install containerd and the CNI
#                                 plugins with apt if missing (`make node`)
#   hack/node.sh up               start the node on the running control plane;
#                                 waits until the Node is Ready
#   hack/node.sh load <archive>   import an OCI/docker image archive into the
#                                 node's containerd (namespace k8s.io)
#   hack/node.sh status           what runs; non-zero if not up
#   hack/node.sh down [--purge]   stop the pods' containers, kubelet, containerd
#                                 and the rest; delete the Node object; --purge
#                                 also deletes the node dir
#
# kubelet and kube-scheduler are built from hack/node/go.mod (the same
# k8s.io/kubernetes version as hack/controlplane) and cached next to
# kube-apiserver. containerd is Debian's, started as a plain process with its
# root, state and socket in the node dir; CNI is Debian's
# containernetworking-plugins (a bridge network, so the node is Ready; the
# operator's Pod uses the host network). The sandbox ("pause") image is a tiny
# static Go program (hack/node/pause) packed into an OCI archive here.
#
# Environment (defaults in brackets); PXO_CLUSTER_DIR and the PXO_*_PORT of
# hack/cluster.sh select the control plane this node joins:
#   PXO_NODE_DIR            containerd root/state/socket, kubelet root, logs,
#                           pids [$PXO_CLUSTER_DIR/node]
#   PXO_NODE_NAME           the Node's name [pxo-node]
#   PXO_KUBELET_PORT        kubelet API on 127.0.0.1 [10250]
#   PXO_KUBELET_HEALTHZ_PORT kubelet /healthz on 127.0.0.1 [10248]
#   PXO_SCHEDULER_PORT      kube-scheduler /healthz on 127.0.0.1 [10259]
#   PXO_NODE_KCM_PORT       the node's kube-controller-manager /healthz [10358]
#   PXO_NO_BUILD=1          never build (the tests set it)
set -euo pipefail

# hack/cluster.sh defines the state dir, PKI, version, cache and the build
# machinery (locks, heartbeat, leftovers); sourcing it runs nothing.
# shellcheck source=cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/cluster.sh"
die() { printf 'node.sh: error: %s\n' "$*" >&2; exit 1; }

NODE_MODULE_DIR="$REPO_ROOT/hack/node"
NODE_NAME=${PXO_NODE_NAME:-pxo-node}
KUBELET_PORT=${PXO_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${PXO_KUBELET_HEALTHZ_PORT:-10248}
SCHEDULER_PORT=${PXO_SCHEDULER_PORT:-10259}
NODE_KCM_PORT=${PXO_NODE_KCM_PORT:-10358}
NODE_DIR=${PXO_NODE_DIR:-$STATE/node}
case $NODE_DIR in /*) ;; *) NODE_DIR="$PWD/$NODE_DIR" ;; esac
NODE_DIR=${NODE_DIR%/}
NODE_MARKER="$NODE_DIR/.proxmox-operator-node"
SOCK="$NODE_DIR/run/containerd.sock"
PAUSE_IMAGE="localhost/pxo-pause:1"
CNI_BIN_DIR=/usr/lib/cni
KUBELET_BIN="$BIN_DIR/kubelet"
SCHEDULER_BIN="$BIN_DIR/kube-scheduler"
PAUSE_BIN="$BIN_DIR/pause"
NODE_STAMP="$BIN_DIR/.node-source-sha256"
NODE_COMPONENTS=(containerd kube-scheduler node-controllers kubelet)

node_source_hash() {
  cat "$NODE_MODULE_DIR/go.mod" "$NODE_MODULE_DIR/go.sum" "$NODE_MODULE_DIR/pause/main.go" | sha256sum | cut -d' ' -f1
}

# ------------------------------------------------------------------- build ---

node_binaries_cached() {
  [[ -x $KUBELET_BIN && -x $SCHEDULER_BIN && -x $PAUSE_BIN && -f $NODE_STAMP &&
    $(cat "$NODE_STAMP") == "$(node_source_hash)" ]]
}

ensure_node_binaries() {
  local v
  v=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit }' "$NODE_MODULE_DIR/go.mod")
  [[ $v == "$K8S_VERSION" ]] ||
    die "hack/node/go.mod pins k8s.io/kubernetes $v, hack/controlplane/go.mod $K8S_VERSION: the node must be the control plane's version"
  [[ ! -d $BIN_DIR ]] || clean_stale_tmp "$BIN_DIR"
  node_binaries_cached && return 0
  [[ ${PXO_NO_BUILD:-0} != 1 ]] ||
    die "kubelet $K8S_VERSION is not built in $BIN_DIR yet: run 'make node' (or 'hack/node.sh build') first"
  mkdir -p "$BIN_DIR"
  with_lock "$BUILD_LOCK" "build"
  local build_lock=$LOCK_FD
  stop_leftovers "$PREV_OWNER"
  clean_stale_tmp "$BIN_DIR"
  if node_binaries_cached; then
    release_lock "$build_lock"
    return 0
  fi
  check_go
  local minor build_date ldflags="-s -w" pkg
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  rm -f "$NODE_STAMP"
  # go_build_one builds k8s.io/kubernetes/cmd/<name> in $MODULE_DIR.
  MODULE_DIR=$NODE_MODULE_DIR
  go_build_one kubelet "$KUBELET_BIN" "$ldflags" "about 1 minute after the control plane's build (5-8 alone)"
  go_build_one kube-scheduler "$SCHEDULER_BIN" "$ldflags" "well under a minute more"
  (
    cd "$NODE_MODULE_DIR"
    for fd in "${LOCK_FDS[@]}"; do eval "exec $fd>&-"; done
    GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 "$GO" build -mod=readonly -trimpath -ldflags "-s -w" \
      -o "$PAUSE_BIN.tmp.$$" ./pause
  ) && mv -f "$PAUSE_BIN.tmp.$$" "$PAUSE_BIN"
  node_source_hash >"$NODE_STAMP.tmp.$$" && mv -f "$NODE_STAMP.tmp.$$" "$NODE_STAMP"
  info "cached in $BIN_DIR"
  release_lock "$build_lock"
}

ensure_node_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local && -x $CNI_BIN_DIR/loopback ]] ||
    missing+=(containernetworking-plugins)
  ((${#missing[@]})) || return 0
  [[ ${PXO_NO_BUILD:-0} != 1 ]] || die "${missing[*]} missing: run 'make node' first"
  [[ $(id -u) == 0 ]] || die "${missing[*]} missing, and the node needs root anyway: run as root"
  log "installing ${missing[*]} with apt-get (the package's own containerd service is never used)"
  local alog="${TMPDIR:-/tmp}/pxo-apt-node.$$.log"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } >"$alog" 2>&1; then
    tail -n 20 "$alog" >&2
    die "'apt-get install ${missing[*]}' failed (log above, full log: $alog)"
  fi
  rm -f "$alog"
}

# ---------------------------------------------------------------- processes ---

node_pidfile() { printf '%s/%s.pid\n' "$NODE_DIR" "$1"; }

# The pid of <component> if it runs from THIS node dir (its command line names it).
node_pid() { # <component>
  local pf pid
  pf=$(node_pidfile "$1")
  [[ -f $pf ]] || return 1
  pid=$(cat "$pf" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$NODE_DIR/" || return 1
  printf '%s\n' "$pid"
}

node_spawn() { # <component> <command...>
  local name=$1
  shift
  spawn_with "$(node_pidfile "$name")" "$NODE_DIR/$name.log" "$name" "$@"
}

node_wait() { # <component> <what> <check command...>
  local name=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! node_pid "$name" >/dev/null; then node_fail "$name" "$name exited before $what"; fi
    ((SECONDS < deadline)) || node_fail "$name" "$name: $what did not happen within ${READY_TIMEOUT}s"
    sleep 0.5
  done
}

node_fail() { # <component> <message>
  printf '%s\n' "--- last 40 lines of $NODE_DIR/$1.log ---" >&2
  tail -n 40 "$NODE_DIR/$1.log" >&2 || true
  die "$2 (the node is left as it is; 'hack/node.sh down' stops it)"
}

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

api_send() { # <method> <path> [json body]: as admin, body on stdout
  curl -fsS --max-time 10 --cacert "$PKI/ca.crt" -H "@$PKI/admin.header" -X "$1" \
    -H 'Content-Type: application/json' ${3:+--data "$3"} "https://127.0.0.1:$APISERVER_PORT$2"
}

node_ready() {
  api_get "/api/v1/nodes/$NODE_NAME" | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
sys.exit(0 if ready and ready[0]["status"] == "True" else 1)'
}

# --------------------------------------------------------------- node files ---

# A client certificate for system:node:<name> in group system:nodes, signed by
# the cluster CA: the kubelet's identity (no bootstrap tokens, no CSR approval).
write_node_kubeconfig() {
  local d="$NODE_DIR/pki"
  mkdir -p "$d"
  if [[ ! -s $d/node.crt ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/node.key" 2>/dev/null
    openssl req -new -key "$d/node.key" -subj "/O=system:nodes/CN=system:node:$NODE_NAME" -out "$d/node.csr" 2>/dev/null
    openssl x509 -req -in "$d/node.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -sha256 -days 30 \
      -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n') \
      -out "$d/node.crt" 2>/dev/null
    rm -f "$d/node.csr"
  fi
  cat >"$NODE_DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: system:node:$NODE_NAME
  user:
    client-certificate: $d/node.crt
    client-key: $d/node.key
contexts:
- name: $CLUSTER_NAME
  context: {cluster: $CLUSTER_NAME, user: "system:node:$NODE_NAME"}
current-context: $CLUSTER_NAME
EOF
}

# The apiserver authorizes with RBAC only (no Node authorizer), so the nodes
# group gets the system:node ClusterRole, as clusters before 1.8 did.
bind_node_role() {
  api_send POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings '{
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "proxmox-operator-local:nodes"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]}' \
    >/dev/null 2>&1 || api_get /apis/rbac.authorization.k8s.io/v1/clusterrolebindings/proxmox-operator-local:nodes >/dev/null ||
    die "cannot create the ClusterRoleBinding for system:nodes"
}

write_containerd_config() {
  mkdir -p "$NODE_DIR/run" "$NODE_DIR/cni"
  cat >"$NODE_DIR/containerd.toml" <<EOF
# Written by hack/node.sh: a containerd of its own, nothing in /var/lib or /run.
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Never below containerd's own oom_score_adj: the kubelet asks -998 for the
  # sandbox, which an unprivileged container host (like CI's) refuses, and runc
  # then fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_DIR/cni"
EOF
  # A bridge network for Pods without hostNetwork (none of ours); with it the
  # runtime reports its network ready, and so the Node is Ready.
  cat >"$NODE_DIR/cni/10-pxo.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "pxo", "plugins": [
  {"type": "bridge", "bridge": "pxo0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$NODE_DIR/cni-ipam"}},
  {"type": "loopback"}]}
EOF
}

write_kubelet_config() {
  local cgroups=v1
  [[ $(stat -fc %T /sys/fs/cgroup) != cgroup2fs ]] || cgroups=v2
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
# Written by hack/node.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
# Kubernetes 1.35+ refuses cgroup v1 unless told so; this machine has cgroup $cgroups.
failCgroupV1: false
cgroupDriver: cgroupfs
# No QoS cgroup tree and no node-allocatable enforcement: the node shares the
# machine with everything else, and pod cgroups are runc's.
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
memorySwap: {swapBehavior: NoSwap}
# Never evict or garbage-collect images because of the machine's disk: this
# node lives for a test run.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
localStorageCapacityIsolation: false
resolvConf: /etc/resolv.conf
serializeImagePulls: false
registerNode: true
staticPodPath: ""
# Container logs and volume plugins in the node dir too, not in /var/log/pods
# and /usr/libexec (only /var/log/containers is fixed in the kubelet).
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $NODE_DIR/volume-plugins
EOF
}

# The sandbox image: hack/node/pause alone in one layer, as an OCI archive.
write_pause_archive() { # <dest>
  local dest=$1 w layer cfg man arch
  w="$NODE_DIR/pause.tmp.$$"
  rm -rf "$w"
  mkdir -p "$w/rootfs" "$w/blobs/sha256"
  cp "$PAUSE_BIN" "$w/rootfs/pause"
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$w/rootfs" -cf "$w/layer.tar" pause
  layer=$(sha256sum <"$w/layer.tar" | cut -d' ' -f1)
  mv "$w/layer.tar" "$w/blobs/sha256/$layer"
  arch=$(GOTOOLCHAIN=local go env GOARCH 2>/dev/null || dpkg --print-architecture)
  printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$layer" >"$w/config.json"
  cfg=$(sha256sum <"$w/config.json" | cut -d' ' -f1)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
    "$cfg" "$(stat -c %s "$w/config.json")" "$layer" "$(stat -c %s "$w/blobs/sha256/$layer")" >"$w/manifest.json"
  man=$(sha256sum <"$w/manifest.json" | cut -d' ' -f1)
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$man" "$(stat -c %s "$w/manifest.json")" "$PAUSE_IMAGE" >"$w/index.json"
  mv "$w/config.json" "$w/blobs/sha256/$cfg"
  mv "$w/manifest.json" "$w/blobs/sha256/$man"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$w/oci-layout"
  tar -C "$w" -cf "$dest" oci-layout index.json blobs
  rm -rf "$w"
}

# ------------------------------------------------------------------ commands ---

ensure_pause_image() {
  [[ -z $(ctr_ images ls -q "name==$PAUSE_IMAGE" 2>/dev/null) ]] || return 0
  write_pause_archive "$NODE_DIR/pause.oci.tar"
  ctr_ images import "$NODE_DIR/pause.oci.tar" >/dev/null
  rm -f "$NODE_DIR/pause.oci.tar"
}

containerd_up() { ctr --address "$SOCK" version; }
component_healthy() { # <port>
  [[ $(curl -fsS --max-time 3 --cacert "$PKI/ca.crt" "https://127.0.0.1:$1/healthz") == ok ]]
}
kubelet_healthy() { [[ $(curl -fsS --max-time 3 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz") == ok ]]; }

cmd_node_up() {
  local t0=$SECONDS c pid
  [[ $(id -u) == 0 ]] || die "the node needs root (containerd, runc, mounts)"
  apiserver_ready || die "the control plane of $STATE is not up: run 'hack/cluster.sh up' first (same PXO_CLUSTER_DIR and ports)"
  ensure_node_binaries
  ensure_node_packages
  mkdir -p "$NODE_DIR"
  touch "$NODE_MARKER"
  with_lock "$NODE_DIR/.lock" "node up/down"
  bind_node_role
  write_node_kubeconfig
  write_containerd_config
  write_kubelet_config
  for c in "${NODE_COMPONENTS[@]}"; do
    # The sandbox image, before the kubelet can ask for it (never pulled).
    [[ $c != kubelet ]] || ensure_pause_image
    if pid=$(node_pid "$c"); then
      info "$c already running (pid $pid)"
      continue
    fi
    log "starting $c"
    case $c in
      containerd)
        node_spawn containerd containerd --config "$NODE_DIR/containerd.toml"
        node_wait containerd "answering on $SOCK" containerd_up
        ;;
      kube-scheduler)
        node_spawn kube-scheduler "$SCHEDULER_BIN" \
          --kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
          --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
          --tls-cert-file="$PKI/kcm.crt" --tls-private-key-file="$PKI/kcm.key" \
          --cert-dir="$NODE_DIR/scheduler-certs" \
          --leader-elect=false --profiling=false
        node_wait kube-scheduler "/healthz ok on 127.0.0.1:$SCHEDULER_PORT" component_healthy "$SCHEDULER_PORT"
        ;;
      node-controllers)
        # What hack/cluster.sh leaves out because nothing ran Pods: Deployments,
        # ReplicaSets, and node lifecycle (it lifts the not-ready taint the
        # kubelet registers with once the Node is Ready). A second
        # kube-controller-manager, so the plain control plane stays as it is.
        node_spawn node-controllers "$KCM_BIN" \
          --kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
          --controllers=deployment,replicaset,nodelifecycle \
          --bind-address=127.0.0.1 --secure-port="$NODE_KCM_PORT" \
          --tls-cert-file="$PKI/kcm.crt" --tls-private-key-file="$PKI/kcm.key" \
          --cert-dir="$NODE_DIR/kcm-certs" \
          --leader-elect=false --use-service-account-credentials=false \
          --cluster-name="$CLUSTER_NAME" --profiling=false
        node_wait node-controllers "/healthz ok on 127.0.0.1:$NODE_KCM_PORT" component_healthy "$NODE_KCM_PORT"
        ;;
      kubelet)
        node_spawn kubelet "$KUBELET_BIN" \
          --config="$NODE_DIR/kubelet.yaml" \
          --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
          --root-dir="$NODE_DIR/kubelet" \
          --cert-dir="$NODE_DIR/kubelet-certs" \
          --hostname-override="$NODE_NAME" \
          --v=1
        node_wait kubelet "/healthz ok on 127.0.0.1:$KUBELET_HEALTHZ_PORT" kubelet_healthy
        ;;
    esac
  done
  node_wait kubelet "Node $NODE_NAME Ready" node_ready
  log "node $NODE_NAME ready in $((SECONDS - t0))s (kubelet $K8S_VERSION, $(containerd --version | awk '{print $3}'), dir $NODE_DIR)"
}

cmd_load() { # <archive>
  local archive=${1:?usage: node.sh load <image archive>}
  [[ -s $archive ]] || die "$archive does not exist"
  node_pid containerd >/dev/null || die "the node's containerd does not run: hack/node.sh up"
  log "importing $archive into the node's containerd"
  ctr_ images import "$archive" >&2
}

node_stop_one() { # <component>
  local name=$1 pid i
  if ! pid=$(node_pid "$name"); then
    rm -f "$(node_pidfile "$name")"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    info "$name did not stop after 10s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(node_pidfile "$name")"
}

# The containers outlive kubelet and containerd (each has a shim): stop them
# through containerd, then any shim of this node still there.
stop_containers() {
  local id pid
  if node_pid containerd >/dev/null; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  for pid in $(pgrep -f -- "containerd-shim.*-address $SOCK" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

unmount_node_dir() {
  local m
  [[ -d $NODE_DIR ]] || return 0
  # Deepest first; the kubelet's volumes (tmpfs) and containerd's rootfs mounts.
  for m in $(awk -v d="$NODE_DIR/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || info "could not unmount $m"
  done
}

cmd_node_down() {
  local purge=${PURGE:-0} i
  case ${1:-} in --purge) purge=1 ;; "") ;; *) die "usage: node.sh down [--purge]" ;; esac
  if [[ -d $NODE_DIR && -f $NODE_MARKER ]]; then
    with_lock "$NODE_DIR/.lock" "node up/down"
    node_stop_one kubelet
    stop_containers
    for ((i = ${#NODE_COMPONENTS[@]} - 1; i >= 0; i--)); do
      node_stop_one "${NODE_COMPONENTS[i]}"
    done
    unmount_node_dir
    # The Node object would stay NotReady forever: it is gone with the node.
    if [[ -s $PKI/admin.header ]] && apiserver_ready 2>/dev/null; then
      api_send DELETE "/api/v1/nodes/$NODE_NAME" >/dev/null 2>&1 || true
    fi
  fi
  if [[ $purge == 1 && -d $NODE_DIR ]]; then
    [[ -f $NODE_MARKER ]] || die "refusing to delete $NODE_DIR: not made by hack/node.sh"
    log "deleting $NODE_DIR"
    rm -rf "$NODE_DIR"
  fi
  ip link delete pxo0 2>/dev/null || true
  return 0
}

cmd_node_status() {
  local c pid ok=0
  for c in "${NODE_COMPONENTS[@]}"; do
    # The sandbox image, before the kubelet can ask for it (never pulled).
    [[ $c != kubelet ]] || ensure_pause_image
    if pid=$(node_pid "$c"); then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s not running\n' "$c"
      ok=1
    fi
  done
  if node_ready 2>/dev/null; then printf '%-24s Ready\n' "node $NODE_NAME"; else printf '%-24s not Ready\n' "node $NODE_NAME" && ok=1; fi
  printf '%-24s %s\n' "node dir" "$NODE_DIR"
  return "$ok"
}

node_main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    build) ensure_node_binaries && info "$KUBELET_BIN" && info "$SCHEDULER_BIN" ;;
    prepare) ensure_node_binaries && ensure_node_packages ;;
    up) cmd_node_up "$@" ;;
    down) cmd_node_down "$@" ;;
    status) cmd_node_status "$@" ;;
    load) cmd_load "$@" ;;
    -h | --help | help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2 ;;
    *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

node_main "$@"
