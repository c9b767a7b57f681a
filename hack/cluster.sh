#!/usr/bin/env bash
# hack/cluster.sh: a real, local Kubernetes control plane on 127.0.0.1 for
# proxmox-operator development and tests: etcd + kube-apiserver +
# kube-controller-manager, no Docker, no kubelet, no nodes.
#
#   hack/cluster.sh up              start (idempotent); the last line on stdout is
#                                   `export KUBECONFIG=<path>`
#   hack/cluster.sh down [--purge]  stop everything; --purge (or PURGE=1) also
#                                   deletes the state dir
#   hack/cluster.sh status          what runs, is /readyz ok; non-zero if not up
#   hack/cluster.sh kubeconfig      print the admin kubeconfig path
#   hack/cluster.sh build           only build/cache the Kubernetes binaries
#   hack/cluster.sh prepare         check tools and ports, build, install etcd:
#                                   what `make controlplane` runs before tests
#
# kube-apiserver and kube-controller-manager are built from source with the Go
# module in hack/controlplane (no prebuilt Kubernetes binary can be downloaded
# here) and cached outside the work tree; etcd is Debian's etcd-server package.
# All human-readable progress goes to stderr, so stdout carries only what a
# caller may want to capture (the export line, the kubeconfig path).
#
# Environment overrides (defaults in brackets):
#   PXO_CLUSTER_DIR      state dir: pki, etcd data, logs, pids [<repo>/.cluster]
#   PXO_CACHE_DIR        binary cache root [$HOME/.cache/proxmox-operator]
#   PXO_APISERVER_PORT   kube-apiserver secure port [16443]
#   PXO_ETCD_PORT        etcd client port [12379]
#   PXO_ETCD_PEER_PORT   etcd peer port [12380]
#   PXO_KCM_PORT         kube-controller-manager secure port [10357]
#   PXO_READY_TIMEOUT    seconds to wait for each component to get ready [90]
#   PXO_ETCD_BIN         etcd binary [etcd on PATH, installed with apt if absent]
#   PXO_GO               the Go to build with [go on PATH, /usr/local/go/bin/go]
#   PXO_NO_BUILD=1       never build: fail at once if the binaries are not cached
#                        (the test fixtures set it: a build never runs under a
#                        test's timeout)
#   KUBECTL              kubectl, only used by `status` hints [<repo>/.venv/bin/kubectl]
#   PURGE=1              same as `down --purge`
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MODULE_DIR="$REPO_ROOT/hack/controlplane"

APISERVER_PORT=${PXO_APISERVER_PORT:-16443}
ETCD_PORT=${PXO_ETCD_PORT:-12379}
ETCD_PEER_PORT=${PXO_ETCD_PEER_PORT:-12380}
KCM_PORT=${PXO_KCM_PORT:-10357}
READY_TIMEOUT=${PXO_READY_TIMEOUT:-90}
CLUSTER_NAME=proxmox-operator-local
# A range setting only: the apiserver allocates ClusterIPs from it (and gives the
# `kubernetes` Service 10.96.0.1), but nothing is routed there.
SERVICE_CIDR=10.96.0.0/16

# Start order; `down` walks it backwards.
COMPONENTS=(etcd kube-apiserver kube-controller-manager)

log() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

# The state dir must be absolute: it ends up in process command lines (used to
# recognise our own processes) and in the printed KUBECONFIG path.
state_dir() {
  local d=${PXO_CLUSTER_DIR:-$REPO_ROOT/.cluster}
  case $d in /*) ;; *) d="$PWD/$d" ;; esac
  printf '%s\n' "${d%/}"
}
STATE=$(state_dir)
PKI="$STATE/pki"
KUBECONFIG_PATH="$STATE/kubeconfig"
# A marker so that `down --purge` only ever deletes a dir this script created,
# even if PXO_CLUSTER_DIR points somewhere unfortunate.
MARKER="$STATE/.proxmox-operator-cluster"

# ---------------------------------------------------------------- versions ---

# The Kubernetes version comes from hack/controlplane/go.mod, so bumping it
# there (plus the replace lines and go.sum) is the whole upgrade.
k8s_version() {
  local v
  v=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }
           $1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit }' "$MODULE_DIR/go.mod")
  [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the k8s.io/kubernetes version from $MODULE_DIR/go.mod"
  printf '%s\n' "$v"
}
K8S_VERSION=$(k8s_version)
CACHE_ROOT=${PXO_CACHE_DIR:-${HOME:?HOME is not set}/.cache/proxmox-operator}
BIN_DIR="$CACHE_ROOT/kubernetes/$K8S_VERSION"
APISERVER_BIN="$BIN_DIR/kube-apiserver"
KCM_BIN="$BIN_DIR/kube-controller-manager"
# The cache is keyed by version (the path) and by the module files (this stamp),
# so editing go.mod/go.sum without a version bump still rebuilds.
STAMP="$BIN_DIR/.source-sha256"

source_hash() {
  cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" | sha256sum | cut -d' ' -f1
}

# ------------------------------------------------------------------ locking ---

# Serialise concurrent invocations (two test sessions calling `up` at once).
# flock is in util-linux, so it is nearly always there; without it, carry on.
# The open lock fds are remembered so that spawn() and the go build can close
# them: a child that inherited one would hold the lock for as long as it runs.
#
# Next to each lock, <lockfile>.owner says who holds it: "<pid> [<build pgid>]".
# A lock that is still held while that pid is dead is held by leftovers of a
# killed run (a child that kept the fd): those are stopped, so a killed run
# never makes the next one wait forever.
LOCK_FDS=()
PREV_OWNER=""
with_lock() { # <lockfile> <what>; sets LOCK_FD, and PREV_OWNER to the last owner record
  local file=$1 what=$2 fd owner
  LOCK_FD=""
  command -v flock >/dev/null 2>&1 || return 0
  mkdir -p "$(dirname "$file")"
  exec {fd}>>"$file"
  LOCK_FDS+=("$fd")
  LOCK_FD=$fd
  PREV_OWNER=$(cat "$file.owner" 2>/dev/null || true)
  if ! flock -n "$fd"; then
    owner=${PREV_OWNER%% *}
    if [[ $owner =~ ^[0-9]+$ ]] && kill -0 "$owner" 2>/dev/null; then
      log "waiting for another cluster.sh ($what, pid $owner) to finish"
      flock "$fd"
    else
      log "a killed run left $file locked (its owner ${owner:-unknown} is gone): stopping its leftovers"
      stop_leftovers "$PREV_OWNER"
      flock -w 10 "$fd" || die "$file is still locked by a process that is not cluster.sh's; find it with 'fuser -v $file' and stop it"
    fi
    PREV_OWNER=$(cat "$file.owner" 2>/dev/null || true)
  fi
  printf '%s\n' "$$" >"$file.owner"
}

# Stops the build process group of an owner record "<pid> <pgid>" if that
# cluster.sh is gone and the group still runs something of ours (its command
# line names our cache dir): a build whose script was killed with SIGKILL.
stop_leftovers() { # <owner record>
  local owner pgid _
  read -r owner pgid _ <<<"$1" || true
  [[ $pgid =~ ^[0-9]+$ ]] || return 0
  [[ $owner =~ ^[0-9]+$ ]] && kill -0 "$owner" 2>/dev/null && return 0
  kill -0 "$pgid" 2>/dev/null || return 0
  tr '\0' ' ' <"/proc/$pgid/cmdline" 2>/dev/null | grep -qF -- "$CACHE_ROOT/" || return 0
  info "stopping the leftover build of a killed run (process group $pgid)"
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pgid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pgid" 2>/dev/null || true
}

# Temporary files are named <file>.tmp.<pid of the cluster.sh that writes them>:
# one whose writer is gone is a leftover of a killed run. A live writer's file
# is left alone, so this is safe without the lock.
clean_stale_tmp() { # <dir>
  local f pid
  for f in "$1"/*.tmp.* "$1"/.*.tmp.*; do
    [[ -e $f ]] || continue
    pid=${f##*.tmp.}
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
    info "removing $(basename "$f"), left by a killed run"
    rm -f "$f"
  done
}

# Runs on every exit: stop a go build still running in the background (after
# Ctrl-C or a kill of this script) and drop its unfinished output. The build
# runs in its own process group (see go_build_one), so the whole group, with
# its compile and link children, is killed. A background job of a script
# ignores SIGINT, so Ctrl-C alone would not stop it.
BUILD_PID=""
BUILD_TMP=""
on_exit() {
  if [[ -n $BUILD_PID ]] && kill -0 "$BUILD_PID" 2>/dev/null; then
    kill -TERM -- "-$BUILD_PID" 2>/dev/null || kill -TERM "$BUILD_PID" 2>/dev/null || true
    wait "$BUILD_PID" 2>/dev/null || true
  fi
  [[ -z $BUILD_TMP ]] || rm -f "$BUILD_TMP"
}
trap on_exit EXIT
# bash skips the EXIT trap when a signal kills it: turn signals into exits.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------- build ---

# Builds <package> (default k8s.io/kubernetes/cmd/<component>) of the module in
# $MODULE_DIR into <dest>; hack/node.sh and hack/tools.sh use it with their own.
go_build_one() { # <component> <dest> <ldflags> <eta text> [<package> [<version>]]
  local name=$1 dest=$2 ldflags=$3 eta=$4 pkg=${5:-k8s.io/kubernetes/cmd/$1} version=${6:-$K8S_VERSION}
  local tmp="$dest.tmp.$$" blog="$(dirname "$dest")/$name.build.log"
  local start now pid n rc=0
  BUILD_TMP=$tmp
  log "building $name $version from source: first time only, $eta on 2 cores"
  info "go build log: $blog"
  start=$(date +%s)
  # -mod=readonly: go.sum is committed and complete; never let a build rewrite
  # go.mod/go.sum in a tree other people are working in. CGO off gives static
  # binaries (as upstream releases them) and needs no C toolchain. -v prints
  # each package as it is compiled, which feeds the heartbeat below.
  (
    cd "$MODULE_DIR"
    for fd in "${LOCK_FDS[@]}"; do eval "exec $fd>&-"; done
    exec setsid env GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 \
      "$GO" build -mod=readonly -trimpath -v -ldflags "$ldflags" -o "$tmp" "$pkg"
  ) >"$blog" 2>&1 &
  pid=$!
  BUILD_PID=$pid
  # setsid made the build the leader of its own process group: remember it, so
  # that the next run can stop it if this script is killed with SIGKILL.
  printf '%s %s\n' "$$" "$pid" >"$BUILD_LOCK.owner"
  # A heartbeat every 30 s, so nobody stares at a silent terminal for minutes.
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 1 30); do
      sleep 1
      kill -0 "$pid" 2>/dev/null || break
    done
    if kill -0 "$pid" 2>/dev/null; then
      now=$(date +%s)
      # go build -v: one line per compiled package; "go: downloading" lines are
      # module downloads (a clean machine fetches ~570 MB of modules first).
      n=$(grep -cv '^go: ' "$blog" || true)
      info "$(printf '... still building %s: %dm%02ds elapsed, %d packages compiled' \
        "$name" $(((now - start) / 60)) $(((now - start) % 60)) "$n")"
    fi
  done
  wait "$pid" || rc=$?
  BUILD_PID=""
  printf '%s\n' "$$" >"$BUILD_LOCK.owner"
  if ((rc != 0)); then
    rm -f "$tmp"
    printf '%s\n' "--- last 30 lines of $blog ---" >&2
    tail -n 30 "$blog" >&2
    die "go build of $name failed (exit $rc)"
  fi
  # The rename is atomic: an interrupted build never leaves a half binary.
  mv -f "$tmp" "$dest"
  BUILD_TMP=""
  now=$(date +%s)
  info "built $name in $((now - start))s"
}

# Go from PXO_GO, PATH, or where the official tarball and Debian put it (a
# login shell's PATH may lack /usr/local/go/bin).
GO=""
check_go() {
  local g
  if [[ -n ${PXO_GO:-} ]]; then
    [[ -x $PXO_GO ]] || die "PXO_GO=$PXO_GO is not an executable Go; point it at a Go >= $(go_wanted) binary or unset it"
    GO=$PXO_GO
  else
    for g in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
      if [[ -n $g && -x $g ]]; then GO=$g && break; fi
    done
    [[ -n $GO ]] || die "Go >= $(go_wanted) is needed once, to build the local Kubernetes parts and tools from source, and none was found: install it and put it on PATH (or set PXO_GO)"
  fi
  local want have
  want=$(go_wanted)
  have=$(GOTOOLCHAIN=local "$GO" env GOVERSION)
  have=${have#go}
  # sort -V puts the smaller version first; we need have >= want.
  if [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) != "$want" ]]; then
    die "${MODULE_DIR#"$REPO_ROOT"/}/go.mod needs Go >= $want, $GO is go$have: install a newer Go (toolchain downloads are not used here)"
  fi
}

go_wanted() { awk '$1 == "go" { print $2; exit }' "$MODULE_DIR/go.mod"; }

binaries_cached() {
  [[ -x $APISERVER_BIN && -x $KCM_BIN && -f $STAMP && $(cat "$STAMP") == "$(source_hash)" ]]
}

BUILD_LOCK="$CACHE_ROOT/kubernetes/.build.lock"
ensure_binaries() {
  [[ ! -d $BIN_DIR ]] || clean_stale_tmp "$BIN_DIR"
  binaries_cached && return 0
  if [[ ${PXO_NO_BUILD:-0} == 1 ]]; then
    die "kube-apiserver $K8S_VERSION is not built in $BIN_DIR yet: run 'make controlplane' (or 'hack/cluster.sh build') first; it takes 6-9 minutes once"
  fi
  mkdir -p "$BIN_DIR"
  # Another state dir (or another `up`) may be building the same version: build
  # once, then everyone uses the cache.
  with_lock "$BUILD_LOCK" "build"
  local build_lock=$LOCK_FD
  # A build whose cluster.sh was killed with SIGKILL may still be compiling.
  stop_leftovers "$PREV_OWNER"
  clean_stale_tmp "$BIN_DIR"
  if binaries_cached; then
    release_lock "$build_lock"
    return 0
  fi
  check_go
  # Stamp the version into both version packages. Without it the binaries say
  # v0.0.0, which kubectl warns about and the aggregator/discovery mis-handle.
  local minor build_date ldflags="-s -w" pkg
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  rm -f "$STAMP"
  # Timings measured on 2 cores with an empty Go build cache; the second binary
  # reuses most of the first one's compiled packages.
  go_build_one kube-apiserver "$APISERVER_BIN" "$ldflags" "about 5-8 minutes"
  go_build_one kube-controller-manager "$KCM_BIN" "$ldflags" "about 1-3 more minutes"
  source_hash >"$STAMP.tmp.$$" && mv -f "$STAMP.tmp.$$" "$STAMP"
  info "cached in $BIN_DIR"
  release_lock "$build_lock"
}

release_lock() { # <fd>
  local fd=$1
  [[ -n $fd ]] || return 0
  exec {fd}>&-
}

# -------------------------------------------------------------------- etcd ---

ETCD_BIN=""
ensure_etcd() {
  ETCD_BIN=${PXO_ETCD_BIN:-$(command -v etcd || true)}
  if [[ -z $ETCD_BIN && -x /usr/bin/etcd ]]; then ETCD_BIN=/usr/bin/etcd; fi
  if [[ -n $ETCD_BIN ]]; then
    [[ -x $ETCD_BIN ]] || die "etcd binary '$ETCD_BIN' is not executable"
    return 0
  fi
  log "etcd not found: installing Debian's etcd-server with apt-get"
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "etcd is missing and installing it needs root: run 'apt-get install etcd-server' as root"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null 2>&1 || die "etcd is missing and there is no apt-get: install etcd 3.4+ and put it on PATH (or set PXO_ETCD_BIN)"
  local alog="${TMPDIR:-/tmp}/pxo-apt-etcd.$$.log"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >"$alog" 2>&1; then
    tail -n 20 "$alog" >&2
    die "'apt-get update' failed (log above, full log: $alog); etcd-server could not be installed"
  fi
  # Debian's package also ships an etcd service. We never use it: our etcd has
  # its own ports and data dir, so a system etcd on 2379 (if one were started)
  # does not collide with ours.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >>"$alog" 2>&1; then
    tail -n 20 "$alog" >&2
    die "'apt-get install etcd-server' failed (log above, full log: $alog)"
  fi
  rm -f "$alog"
  ETCD_BIN=$(command -v etcd || true)
  [[ -n $ETCD_BIN ]] || ETCD_BIN=/usr/bin/etcd
  [[ -x $ETCD_BIN ]] || die "etcd-server installed but no etcd binary found"
  info "installed $("$ETCD_BIN" --version 2>/dev/null | head -n1)"
}

# --------------------------------------------------------------------- pki ---

# Everything is generated once per state dir and reused by later `up`s, so the
# kubeconfig (and any token a test kept) stays valid across down/up.
ensure_pki() {
  command -v openssl >/dev/null 2>&1 || die "openssl is needed to create the cluster certificates"
  mkdir -p "$PKI"
  chmod 700 "$STATE" "$PKI"
  (
    cd "$PKI"
    umask 077
    if [[ ! -s ca.crt || ! -s ca.key ]]; then
      log "creating a CA, serving certificates and keys in $PKI"
      openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
      openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=$CLUSTER_NAME-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out ca.crt 2>/dev/null
      rm -f apiserver.crt kcm.crt
    fi
    # kube-apiserver serving cert: everything a client might call it by here.
    issue_serving_cert apiserver kube-apiserver \
      "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
    # kube-controller-manager serving cert, so its /healthz is checked with TLS
    # verification like everything else.
    issue_serving_cert kcm kube-controller-manager "DNS:localhost,IP:127.0.0.1"
    if [[ ! -s sa.key || ! -s sa.pub ]]; then
      # Service-account token signing key pair (RS256, the apiserver's default).
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    fi
    if [[ ! -s tokens.csv ]]; then
      # Static bearer tokens (--token-auth-file): token,user,uid,"groups".
      # system:masters bypasses RBAC; everybody else goes through RBAC.
      local admin kcm
      admin=$(openssl rand -hex 32)
      kcm=$(openssl rand -hex 32)
      printf '%s,admin,uid-admin,"system:masters"\n' "$admin" >tokens.csv
      printf '%s,system:kube-controller-manager,uid-kcm,"system:masters"\n' "$kcm" >>tokens.csv
      printf 'Authorization: Bearer %s\n' "$admin" >admin.header
    fi
  )
}

issue_serving_cert() { # <file stem> <CN> <subjectAltName list>
  local stem=$1 cn=$2 san=$3
  [[ -s $stem.crt && -s $stem.key ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "$stem.key" 2>/dev/null
  openssl req -new -key "$stem.key" -subj "/CN=$cn" -out "$stem.csr" 2>/dev/null
  openssl x509 -req -in "$stem.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
    -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san") \
    -out "$stem.crt" 2>/dev/null
  rm -f "$stem.csr"
}

token_of() { # <user>
  awk -F, -v u="$1" '$2 == u { print $1; exit }' "$PKI/tokens.csv"
}

write_kubeconfig() { # <path> <user> <token>
  local path=$1 user=$2 token=$3 ca tmp
  ca=$(base64 -w0 <"$PKI/ca.crt")
  tmp="$path.tmp.$$"
  (
    umask 077
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $ca
users:
- name: $user
  user:
    token: $token
contexts:
- name: $CLUSTER_NAME
  context:
    cluster: $CLUSTER_NAME
    user: $user
current-context: $CLUSTER_NAME
EOF
  )
  mv -f "$tmp" "$path"
}

# --------------------------------------------------------------- processes ---

pidfile() { printf '%s/%s.pid\n' "$STATE" "$1"; }

# Prints the pid if <component> runs from THIS state dir. The pid file alone is
# not enough (pids get reused), so the process's command line must also mention
# the state dir, which every one of ours does.
running_pid() { # <component>
  local pf pid
  pf=$(pidfile "$1")
  [[ -f $pf ]] || return 1
  pid=$(cat "$pf" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE/" || return 1
  printf '%s\n' "$pid"
}

# True if <pid> is a process that has not exited (a zombie has).
alive() { # <pid>
  local state
  [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ ${state%% *} != Z ]]
}

port_of() {
  case $1 in
    etcd) printf '%s %s\n' "$ETCD_PORT" "$ETCD_PEER_PORT" ;;
    kube-apiserver) printf '%s\n' "$APISERVER_PORT" ;;
    kube-controller-manager) printf '%s\n' "$KCM_PORT" ;;
  esac
}

port_in_use() { # <port>: true if something accepts connections on 127.0.0.1:<port>
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Start <component> detached (own session, stdin closed) so it outlives the
# calling shell. The inner bash writes its own pid and then execs the binary,
# so the pid file holds the real process even if setsid had to fork.
spawn() { # <component> <command...>
  local name=$1
  shift
  spawn_with "$(pidfile "$name")" "$STATE/$name.log" "$name" "$@"
}

spawn_with() { # <pid file> <log file> <component> <command...>; hack/node.sh uses it too
  local pf=$1 logf=$2 name=$3
  shift 3
  rm -f "$pf"
  printf '\n=== %s: starting %s ===\n' "$(date -u +%FT%TZ)" "$name" >>"$logf"
  # shellcheck disable=SC2016  # $$, $0 and $fd are for the inner shell
  PXO_CLOSE_FDS="${LOCK_FDS[*]}" setsid bash -c '
    echo $$ >"$0"
    for fd in $PXO_CLOSE_FDS; do eval "exec $fd>&-"; done
    unset PXO_CLOSE_FDS
    exec "$@"' "$pf" "$@" </dev/null >>"$logf" 2>&1 &
  local i
  for i in $(seq 1 50); do
    [[ -s $pf ]] && return 0
    sleep 0.1
  done
  die "$name did not start (no pid file after 5 s); see $logf"
}

# Poll <check command...> until it succeeds; fail with the log tail if the
# process dies or the timeout passes.
#
# Whether it died is asked of the pid it was just started with (alive), not
# of running_pid: running_pid also matches the command line against the state
# dir, to tell our processes from strangers that reuse a pid, and that check
# failed twice in one hour on a process that went on to serve (the likely
# cause: a command line read while the process is still exec'ing its binary,
# which reads empty; not proven). Right after the start
# the pid cannot belong to a stranger: it is only reused once the process has
# died and been reaped, which alive sees.
wait_ready() { # <component> <what> <check command...>
  local name=$1 what=$2 deadline pid
  shift 2
  pid=$(cat "$(pidfile "$name")" 2>/dev/null || true)
  deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      fail_with_log "$name" "$name exited before $what"
    fi
    if ((SECONDS >= deadline)); then
      fail_with_log "$name" "$name: $what did not happen within ${READY_TIMEOUT}s"
    fi
    sleep 0.5
  done
}

fail_with_log() { # <component> <message>
  local name=$1 msg=$2
  printf '%s\n' "--- last 40 lines of $STATE/$name.log ---" >&2
  tail -n 40 "$STATE/$name.log" >&2 || true
  die "$msg (the cluster is left as it is; 'hack/cluster.sh down' stops it)"
}

# curl against our own endpoints, always verifying TLS with our CA.
api_get() { # <path>: GET on the apiserver as admin, body on stdout
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" -H "@$PKI/admin.header" \
    "https://127.0.0.1:$APISERVER_PORT$1"
}
etcd_healthy() {
  curl -fsS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'
}
apiserver_ready() { [[ $(api_get /readyz) == ok ]]; }
kcm_healthy() {
  [[ $(curl -fsS --max-time 3 --cacert "$PKI/ca.crt" "https://127.0.0.1:$KCM_PORT/healthz") == ok ]]
}
# The serviceaccount controller creating `default` in `default` proves that
# kube-controller-manager is connected and working.
default_sa_exists() { api_get /api/v1/namespaces/default/serviceaccounts/default; }

start_etcd() {
  # Variables named ETCD_* configure etcd too, and it refuses flags that an
  # environment variable also sets: start it with none of them.
  local unset_env=() v
  for v in $(compgen -e); do
    [[ $v == ETCD_* ]] && unset_env+=(-u "$v")
  done
  # etcd 3.4 only runs on arm64 when told that is fine.
  [[ $(uname -m) == aarch64 ]] && unset_env+=(ETCD_UNSUPPORTED_ARCH=arm64)
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE/etcd"
  spawn etcd env "${unset_env[@]}" "$ETCD_BIN" \
    --name=pxo \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="pxo=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --snapshot-count=10000 \
    --logger=zap --log-outputs=stderr
  wait_ready etcd "answering /health on 127.0.0.1:$ETCD_PORT" etcd_healthy
}

start_apiserver() {
  spawn kube-apiserver "$APISERVER_BIN" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --cert-dir="$PKI" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer="https://127.0.0.1:$APISERVER_PORT" \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --endpoint-reconciler-type=none \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --profiling=false
  wait_ready kube-apiserver "/readyz ok on https://127.0.0.1:$APISERVER_PORT" apiserver_ready
}

start_kcm() {
  # namespace: finishes namespace deletion (else namespaces hang in Terminating)
  # garbagecollector: deletes dependents whose ownerReferences are gone
  # serviceaccount(-token): `default` ServiceAccount per namespace, token secrets
  # clusterrole-aggregation: fills the admin/edit/view ClusterRoles, so binding
  #   a ServiceAccount to `edit` grants what it does on a real cluster
  # root-ca-cert-publisher: kube-root-ca.crt ConfigMap in every namespace
  # Nothing that needs nodes or pods: there is no kubelet.
  # No --authentication/--authorization-kubeconfig: delegated auth of its own
  # port would need the apiserver's front-proxy (requestheader) CA, or it logs
  # errors forever; /healthz is always allowed, and that is all we call.
  spawn kube-controller-manager "$KCM_BIN" \
    --kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --controllers=namespace,garbagecollector,serviceaccount,serviceaccount-token,clusterrole-aggregation,root-ca-cert-publisher \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$PKI" \
    --tls-cert-file="$PKI/kcm.crt" \
    --tls-private-key-file="$PKI/kcm.key" \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --cluster-name="$CLUSTER_NAME" \
    --profiling=false
  wait_ready kube-controller-manager "/healthz ok on https://127.0.0.1:$KCM_PORT" kcm_healthy
}

# ----------------------------------------------------------------- commands ---

# Everything a new machine may lack is checked before anything long starts,
# each with one line that says what is missing and what to do.
check_tools() {
  local tool pkg
  for tool in curl:curl openssl:openssl; do
    pkg=${tool#*:}
    tool=${tool%%:*}
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: install it (apt-get install $pkg)"
  done
}

# Fail early, before a long build, if a port we need is taken by something
# that is not ours (ours are left running and reused).
check_ports() {
  local c port
  for c in "${COMPONENTS[@]}"; do
    running_pid "$c" >/dev/null && continue
    rm -f "$(pidfile "$c")" # stale, if it existed
    for port in $(port_of "$c"); do
      if port_in_use "$port"; then
        die "port 127.0.0.1:$port (for $c) is already in use by another process: stop it, or choose other ports with PXO_APISERVER_PORT, PXO_ETCD_PORT, PXO_ETCD_PEER_PORT, PXO_KCM_PORT"
      fi
    done
  done
}

# `make controlplane`: everything `up` needs, before any test runs: tools, free
# ports, the built binaries (the first time: 6-9 minutes, with progress) and etcd.
cmd_prepare() {
  local t0=$SECONDS
  check_tools
  check_ports
  ensure_binaries
  ensure_etcd
  log "control plane prerequisites ready in $((SECONDS - t0))s: kube-apiserver $K8S_VERSION in $BIN_DIR, $("$ETCD_BIN" --version 2>/dev/null | head -n1)"
}

cmd_up() {
  local t0=$SECONDS c pid started=0
  mkdir -p "$STATE"
  touch "$MARKER"
  with_lock "$STATE/.lock" "up/down"

  # Already running and healthy? Then there is nothing to do.
  if running_pid etcd >/dev/null && running_pid kube-apiserver >/dev/null &&
    running_pid kube-controller-manager >/dev/null && apiserver_ready && [[ -s $KUBECONFIG_PATH ]]; then
    log "control plane already running from $STATE (kube-apiserver https://127.0.0.1:$APISERVER_PORT ready)"
    printf 'export KUBECONFIG=%s\n' "$KUBECONFIG_PATH"
    return 0
  fi

  check_tools
  check_ports
  ensure_binaries
  ensure_etcd
  ensure_pki
  write_kubeconfig "$KUBECONFIG_PATH" admin "$(token_of admin)"
  write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" system:kube-controller-manager \
    "$(token_of system:kube-controller-manager)"

  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then
      info "$c already running (pid $pid)"
      continue
    fi
    log "starting $c"
    case $c in
      etcd) start_etcd ;;
      kube-apiserver) start_apiserver ;;
      kube-controller-manager) start_kcm ;;
    esac
    started=1
  done
  # A component kept running (e.g. an apiserver whose etcd was restarted) must
  # still be healthy before we say we are up.
  wait_ready kube-apiserver "/readyz ok" apiserver_ready
  wait_ready kube-controller-manager "creating the default ServiceAccount" default_sa_exists
  if ((started)); then
    log "control plane ready in $((SECONDS - t0))s: kube-apiserver $K8S_VERSION on https://127.0.0.1:$APISERVER_PORT (state: $STATE)"
  else
    log "control plane running from $STATE"
  fi
  printf 'export KUBECONFIG=%s\n' "$KUBECONFIG_PATH"
}

stop_one() { # <component>
  local name=$1 pid i
  if ! pid=$(running_pid "$name"); then
    rm -f "$(pidfile "$name")"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  # etcd and the apiserver shut down cleanly in a second or two; give them 10.
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    info "$name did not stop after 10s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$(pidfile "$name")"
}

cmd_down() {
  local purge=${PURGE:-0} i
  case ${1:-} in
    --purge) purge=1 ;;
    "") ;;
    *) die "usage: cluster.sh down [--purge]" ;;
  esac
  if [[ -d $STATE ]]; then
    # Lock only a dir of ours: `down` must not create files anywhere else.
    [[ ! -f $MARKER ]] || with_lock "$STATE/.lock" "up/down"
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
      stop_one "${COMPONENTS[i]}"
    done
  fi
  if [[ $purge == 1 && -d $STATE ]]; then
    [[ -f $MARKER ]] || die "refusing to delete $STATE: it was not created by hack/cluster.sh (no $(basename "$MARKER"))"
    log "deleting $STATE"
    rm -rf "$STATE"
  fi
  return 0
}

cmd_status() {
  local c pid ok=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then
      printf '%-24s running (pid %s, port %s)\n' "$c" "$pid" "$(port_of "$c" | tr ' ' ,)"
    else
      printf '%-24s not running\n' "$c"
      ok=1
    fi
  done
  if [[ -s $PKI/admin.header ]] && apiserver_ready 2>/dev/null; then
    printf '%-24s ok\n' "/readyz"
  else
    printf '%-24s not ok\n' "/readyz"
    ok=1
  fi
  printf '%-24s %s\n' "state dir" "$STATE"
  printf '%-24s %s\n' "kubeconfig" "$KUBECONFIG_PATH"
  if ((ok == 0)); then
    local kubectl=${KUBECTL:-$REPO_ROOT/.venv/bin/kubectl}
    [[ -x $kubectl ]] || kubectl=kubectl
    printf '%-24s KUBECONFIG=%s %s get ns\n' "try" "$KUBECONFIG_PATH" "$kubectl"
  fi
  return "$ok"
}

cmd_kubeconfig() {
  [[ -s $KUBECONFIG_PATH ]] || printf 'cluster.sh: note: %s does not exist yet: run hack/cluster.sh up\n' "$KUBECONFIG_PATH" >&2
  printf '%s\n' "$KUBECONFIG_PATH"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    kubeconfig) cmd_kubeconfig "$@" ;;
    build) ensure_binaries && info "$APISERVER_BIN" && info "$KCM_BIN" ;;
    prepare) cmd_prepare "$@" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

# Sourcing the file (for tests of single functions) defines everything and runs nothing.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
