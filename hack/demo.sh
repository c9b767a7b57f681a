#!/usr/bin/env bash
# hack/demo.sh: the whole story on one machine, from nothing to a Ready ProxmoxCluster.
#
#   hack/demo.sh up     local control plane, CRD, RBAC, PVE simulator, operator, sample cluster -> Ready
#   hack/demo.sh down   stop the operator, the simulator and the control plane
#
# Everything listens on 127.0.0.1. State lives in .demo/ (gitignored): the simulator's config, certificates
# and logs, the operator's kubeconfig and log, pid files.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DEMO=${PXO_DEMO_DIR:-$ROOT/.demo}
BIN=$ROOT/.venv/bin
KUBECTL=$BIN/kubectl
NS=proxmox-demo
PVE_VERSION=8.4.1

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

stop_pid() {  # stop_pid NAME: TERM the process in $DEMO/NAME.pid, KILL after 10 s
  local f=$DEMO/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    info "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}

wait_file() {  # wait_file PATH SECONDS WHAT
  local i
  for i in $(seq 1 $(( $2 * 4 ))); do [[ -s $1 ]] && return 0; sleep 0.25; done
  die "$3 did not start within $2 s"
}

up() {
  [[ -x $KUBECTL ]] || die "run 'make demo' (it creates .venv first)"
  mkdir -p "$DEMO"

  step "1/6 local Kubernetes control plane (first run builds kube-apiserver from source: 5-10 minutes)"
  local export_line
  export_line=$(bash "$ROOT/hack/cluster.sh" up | tail -n 1)
  [[ $export_line == "export KUBECONFIG="* ]] || die "hack/cluster.sh up did not print the KUBECONFIG line"
  export KUBECONFIG=${export_line#export KUBECONFIG=}
  "$KUBECTL" version 2>/dev/null | sed 's/^/    /' >&2

  step "2/6 CRD and RBAC"
  "$KUBECTL" apply --server-side -f "$ROOT/crds" >&2
  "$KUBECTL" wait --for=condition=Established crd/proxmoxclusters.proxmox-operator.dev --timeout=60s >&2
  "$KUBECTL" apply --server-side -f "$ROOT/deploy/rbac.yaml" >&2

  step "3/6 Proxmox VE simulator (3 nodes, PVE $PVE_VERSION, HTTPS with its own cluster CA)"
  stop_pid simulator
  local password token
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
  token=$(python3 -c 'import uuid; print(uuid.uuid4())')
  umask 077
  cat > "$DEMO/simulator.json" <<JSON
{
  "pve_version": "$PVE_VERSION",
  "cluster_name": "demo",
  "nodes": [{"name": "pve1"}, {"name": "pve2"}, {"name": "pve3", "online": false}],
  "users": [{"userid": "root@pam", "password": "$password"}],
  "tokens": [{"tokenid": "root@pam!operator", "secret": "$token", "privsep": true, "sys_audit": true}],
  "cert_dir": "$DEMO/pve-certs"
}
JSON
  rm -f "$DEMO/simulator.ready"
  setsid "$BIN/pve-simulator" --config "$DEMO/simulator.json" --ready-file "$DEMO/simulator.ready" \
    >"$DEMO/simulator.log" 2>&1 < /dev/null &
  echo $! > "$DEMO/simulator.pid"
  info "generating the cluster CA and node certificates (RSA 4096, a few seconds the first time)"
  wait_file "$DEMO/simulator.ready" 60 "the simulator (see $DEMO/simulator.log)"
  local url ca
  url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$DEMO/simulator.ready")
  ca=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_path"])' "$DEMO/simulator.ready")
  info "listening on $url (log: $DEMO/simulator.log)"

  step "4/6 operator (as ServiceAccount proxmox-operator-system/proxmox-operator, RBAC from deploy/rbac.yaml)"
  stop_pid operator
  local sa_token server ca_data
  sa_token=$("$KUBECTL" create token proxmox-operator -n proxmox-operator-system --duration=24h)
  server=$("$KUBECTL" config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca_data=$("$KUBECTL" config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  cat > "$DEMO/operator.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority-data: "$ca_data"}}]
users: [{name: proxmox-operator, user: {token: "$sa_token"}}]
contexts: [{name: operator, context: {cluster: local, user: proxmox-operator}}]
current-context: operator
YAML
  KUBECONFIG=$DEMO/operator.kubeconfig setsid "$BIN/proxmox-operator" >"$DEMO/operator.log" 2>&1 < /dev/null &
  echo $! > "$DEMO/operator.pid"
  sleep 1
  kill -0 "$(cat "$DEMO/operator.pid")" 2>/dev/null || { tail -n 30 "$DEMO/operator.log" >&2; die "the operator exited"; }
  info "running (log: $DEMO/operator.log)"

  step "5/6 sample: a Secret with an API token and a ProxmoxCluster in namespace $NS"
  "$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply --server-side -f - >&2
  # The label is the owner's opt-in: the operator uses no Secret without it. The annotation limits where the
  # credentials may be sent: here, the simulator's loopback addresses only.
  "$KUBECTL" -n "$NS" create secret generic demo-credentials \
    --from-literal=tokenId='root@pam!operator' --from-literal=tokenSecret="$token" \
    --dry-run=client -o yaml \
    | "$KUBECTL" label --local -f - proxmox-operator.dev/credentials=true -o yaml \
    | "$KUBECTL" annotate --local -f - 'proxmox-operator.dev/allowed-hosts=127.*.*.*' -o yaml \
    | "$KUBECTL" apply --server-side -f - >&2
  python3 - "$url" "$ca" <<'PY' | "$KUBECTL" -n "$NS" apply --server-side -f - >&2
import json, sys
url, ca = sys.argv[1], open(sys.argv[2]).read()
print(json.dumps({
    "apiVersion": "proxmox-operator.dev/v1alpha1", "kind": "ProxmoxCluster",
    "metadata": {"name": "demo"},
    "spec": {"endpoint": url, "credentialsRef": {"name": "demo-credentials"}, "tls": {"caBundle": ca}},
}))
PY

  step "6/6 waiting for Ready"
  if ! "$KUBECTL" -n "$NS" wait --for=condition=Ready pxc/demo --timeout=120s >&2; then
    "$KUBECTL" -n "$NS" describe pxc/demo >&2 || true
    tail -n 40 "$DEMO/operator.log" >&2
    die "the sample cluster did not become Ready"
  fi
  echo
  "$KUBECTL" -n "$NS" get proxmoxclusters -o wide
  cat <<EOF

The ProxmoxCluster 'demo' is Ready. Try:
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL -n $NS describe pxc demo
  $KUBECTL -n $NS get events
Logs: $DEMO/operator.log, $DEMO/simulator.log
Stop everything: make demo-down
EOF
}

down() {
  step "stopping the operator and the simulator"
  stop_pid operator
  stop_pid simulator
  step "stopping the local control plane"
  bash "$ROOT/hack/cluster.sh" down
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
