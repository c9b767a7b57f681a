#!/usr/bin/env bash
# hack/tools.sh: developer tools built from source with the Go module in
# hack/tools (no prebuilt binary can be downloaded here) and cached outside the
# work tree.
#
#   hack/tools.sh helm      print the path of the cached helm binary, building
#                           it first if it is missing (once: about 1-2 minutes
#                           on 2 cores); `make tools` runs this before the tests
#   hack/tools.sh version   print the helm version pinned in hack/tools/go.mod
#
# Progress goes to stderr; stdout carries only the binary path, so
# `helm=$(hack/tools.sh helm)` works.
#
# Environment overrides (defaults in brackets):
#   PXO_CACHE_DIR   binary cache root [$HOME/.cache/proxmox-operator]
#   PXO_GO          the Go to build with [go on PATH, /usr/local/go/bin/go]
#   PXO_NO_BUILD=1  never build: fail at once if helm is not cached (the tests
#                   set it: a build never runs under a test's timeout)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MODULE_DIR="$REPO_ROOT/hack/tools"

log() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'tools.sh: error: %s\n' "$*" >&2; exit 1; }

# The version of a required module, from hack/tools/go.mod: bumping it there
# (and go.sum) is the whole upgrade.
module_version() { # <module path>
  local v
  v=$(awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }
                     $1 == "require" && $2 == m { print $3; exit }' "$MODULE_DIR/go.mod")
  [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the $1 version from $MODULE_DIR/go.mod"
  printf '%s\n' "$v"
}
HELM_VERSION=$(module_version helm.sh/helm/v3)
CACHE_ROOT=${PXO_CACHE_DIR:-${HOME:?HOME is not set}/.cache/proxmox-operator}
BIN_DIR="$CACHE_ROOT/helm/$HELM_VERSION"
HELM_BIN="$BIN_DIR/helm"
# Keyed by version (the path) and by the module files (this stamp), so editing
# go.mod/go.sum without a version bump still rebuilds.
STAMP="$BIN_DIR/.source-sha256"
BUILD_LOCK="$CACHE_ROOT/helm/.build.lock"

source_hash() {
  cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" | sha256sum | cut -d' ' -f1
}

cached() {
  [[ -x $HELM_BIN && -f $STAMP && $(cat "$STAMP") == "$(source_hash)" ]]
}

# Temporary files are <file>.tmp.<pid of the tools.sh writing them>: one whose
# writer is gone is a leftover of a killed run.
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

# The build runs in a process group of its own; on any exit (Ctrl-C, TERM, an
# error) the whole group is stopped and its unfinished output removed. A
# background job of a script ignores SIGINT, so Ctrl-C alone would not stop it.
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
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

GO=""
check_go() {
  local g want have
  if [[ -n ${PXO_GO:-} ]]; then
    [[ -x $PXO_GO ]] || die "PXO_GO=$PXO_GO is not an executable Go"
    GO=$PXO_GO
  else
    for g in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
      if [[ -n $g && -x $g ]]; then GO=$g && break; fi
    done
  fi
  want=$(awk '$1 == "go" { print $2; exit }' "$MODULE_DIR/go.mod")
  [[ -n $GO ]] || die "Go >= $want is needed once, to build helm from source, and none was found: install it and put it on PATH (or set PXO_GO)"
  have=$(GOTOOLCHAIN=local "$GO" env GOVERSION)
  have=${have#go}
  if [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) != "$want" ]]; then
    die "hack/tools/go.mod needs Go >= $want, $GO is go$have: install a newer Go (toolchain downloads are not used here)"
  fi
}

# Stops the build process group recorded in the lock's owner file
# ("<pid> <pgid>") when that tools.sh is gone: a build whose script was killed
# with SIGKILL.
stop_leftovers() {
  local owner pgid _
  read -r owner pgid _ 2>/dev/null <"$BUILD_LOCK.owner" || return 0
  [[ $pgid =~ ^[0-9]+$ ]] || return 0
  [[ $owner =~ ^[0-9]+$ ]] && kill -0 "$owner" 2>/dev/null && return 0
  kill -0 "$pgid" 2>/dev/null || return 0
  tr '\0' ' ' <"/proc/$pgid/cmdline" 2>/dev/null | grep -qF -- "$BIN_DIR/" || return 0
  info "stopping the leftover build of a killed run (process group $pgid)"
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pgid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pgid" 2>/dev/null || true
}

build_helm() {
  local lock_fd="" k8s minor ldflags tmp blog start now pid n rc=0
  mkdir -p "$BIN_DIR"
  # One build at a time; whoever waited finds the cache filled.
  if command -v flock >/dev/null 2>&1; then
    exec {lock_fd}>>"$BUILD_LOCK"
    if ! flock -n "$lock_fd"; then
      log "waiting for another hack/tools.sh to finish building helm"
      flock "$lock_fd"
    fi
  fi
  stop_leftovers
  clean_stale_tmp "$BIN_DIR"
  if cached; then
    [[ -z $lock_fd ]] || exec {lock_fd}>&-
    return 0
  fi
  check_go
  # helm's own Makefile stamps the version (without it `helm version` says
  # "v3.22" plus "+unreleased") and the Kubernetes version of its client-go,
  # which `helm template` and `helm lint` use as .Capabilities.KubeVersion.
  k8s=$(module_version k8s.io/client-go)
  minor=$(cut -d. -f2 <<<"$k8s")
  ldflags="-s -w"
  ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  tmp="$HELM_BIN.tmp.$$"
  blog="$BIN_DIR/helm.build.log"
  rm -f "$STAMP"
  BUILD_TMP=$tmp
  log "building helm $HELM_VERSION from source: first time only, about 1-2 minutes on 2 cores"
  info "go build log: $blog"
  start=$(date +%s)
  # -mod=readonly: go.sum is committed and complete, so a build never rewrites
  # go.mod/go.sum. CGO off: a static binary that needs no C toolchain.
  (
    cd "$MODULE_DIR"
    [[ -z $lock_fd ]] || eval "exec $lock_fd>&-"
    exec setsid env GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS= \
      "$GO" build -mod=readonly -trimpath -v -ldflags "$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm
  ) >"$blog" 2>&1 &
  pid=$!
  BUILD_PID=$pid
  printf '%s %s\n' "$$" "$pid" >"$BUILD_LOCK.owner"
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 1 30); do
      sleep 1
      kill -0 "$pid" 2>/dev/null || break
    done
    if kill -0 "$pid" 2>/dev/null; then
      now=$(date +%s)
      n=$(grep -cv '^go: ' "$blog" || true)
      info "$(printf '... still building helm: %dm%02ds elapsed, %d packages compiled' \
        $(((now - start) / 60)) $(((now - start) % 60)) "$n")"
    fi
  done
  wait "$pid" || rc=$?
  BUILD_PID=""
  printf '%s\n' "$$" >"$BUILD_LOCK.owner"
  if ((rc != 0)); then
    rm -f "$tmp"
    printf '%s\n' "--- last 30 lines of $blog ---" >&2
    tail -n 30 "$blog" >&2
    die "go build of helm failed (exit $rc)"
  fi
  # The rename is atomic: an interrupted build never leaves a half binary.
  mv -f "$tmp" "$HELM_BIN"
  BUILD_TMP=""
  source_hash >"$STAMP.tmp.$$" && mv -f "$STAMP.tmp.$$" "$STAMP"
  info "built helm $HELM_VERSION in $(($(date +%s) - start))s, cached in $BIN_DIR"
  [[ -z $lock_fd ]] || exec {lock_fd}>&-
}

ensure_helm() {
  [[ ! -d $BIN_DIR ]] || clean_stale_tmp "$BIN_DIR"
  cached && return 0
  if [[ ${PXO_NO_BUILD:-0} == 1 ]]; then
    die "helm $HELM_VERSION is not built in $BIN_DIR yet: run 'make tools' (or 'hack/tools.sh helm') first; it takes a few minutes once"
  fi
  build_helm
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

main() {
  case ${1:-} in
    helm) ensure_helm && printf '%s\n' "$HELM_BIN" ;;
    version) printf '%s\n' "$HELM_VERSION" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
