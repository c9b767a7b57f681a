#!/usr/bin/env bash
# hack/tools.sh: developer tools built from source with the Go module in
# hack/tools (no prebuilt binary can be downloaded here) and cached outside the
# work tree.
#
#   hack/tools.sh helm      print the path of the cached helm binary, building
#                           it first if it is missing (once: about 1-2 minutes
#                           on 2 cores); `make tools` runs this before the tests
#   hack/tools.sh version   print the helm version pinned in hack/tools/go.mod
#   hack/tools.sh kstatus   print the path of the cached kstatus program (a
#                           module of its own, hack/kstatus: kstatus' verdict
#                           on objects read from stdin, as Flux computes it),
#                           building it first if it is missing (once: under a
#                           minute); `make tools` runs this too
#
# Progress goes to stderr; stdout carries only the binary path, so
# `helm=$(hack/tools.sh helm)` works.
#
# Environment overrides (defaults in brackets):
#   PXO_CACHE_DIR   binary cache root [$HOME/.cache/proxmox-operator]
#   PXO_GO          the Go to build with [go on PATH, /usr/local/go/bin/go]
#   PXO_NO_BUILD=1  never build: fail at once if the tool is not cached (the
#                   tests set it: a build never runs under a test's timeout)
set -euo pipefail

# hack/cluster.sh has the build machinery (locks, leftovers of killed runs, the
# Go check, a build with a heartbeat); sourcing it runs nothing.
# shellcheck source=cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/cluster.sh"
die() { printf 'tools.sh: error: %s\n' "$*" >&2; exit 1; }

TOOLS_MODULE_DIR="$REPO_ROOT/hack/tools"

# The version of a required module, from hack/tools/go.mod: bumping it there
# (and go.sum) is the whole upgrade.
module_version() { # <module path>
  local v
  v=$(awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }
                     $1 == "require" && $2 == m { print $3; exit }' "$TOOLS_MODULE_DIR/go.mod")
  [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the $1 version from $TOOLS_MODULE_DIR/go.mod"
  printf '%s\n' "$v"
}
HELM_VERSION=$(module_version helm.sh/helm/v3)
HELM_DIR="$CACHE_ROOT/helm/$HELM_VERSION"
HELM_BIN="$HELM_DIR/helm"
# Keyed by version (the path) and by the module files (this stamp), so editing
# go.mod/go.sum without a version bump still rebuilds.
HELM_STAMP="$HELM_DIR/.source-sha256"
HELM_LOCK="$CACHE_ROOT/helm/.build.lock"

helm_source_hash() {
  cat "$TOOLS_MODULE_DIR/go.mod" "$TOOLS_MODULE_DIR/go.sum" | sha256sum | cut -d' ' -f1
}

helm_cached() {
  [[ -x $HELM_BIN && -f $HELM_STAMP && $(cat "$HELM_STAMP") == "$(helm_source_hash)" ]]
}

build_helm() {
  mkdir -p "$HELM_DIR"
  with_lock "$HELM_LOCK" "helm build"
  local lock_fd=$LOCK_FD
  stop_leftovers "$PREV_OWNER"
  clean_stale_tmp "$HELM_DIR"
  if helm_cached; then
    release_lock "$lock_fd"
    return 0
  fi
  # go_build_one and check_go work on $MODULE_DIR and record the build in $BUILD_LOCK's owner file.
  MODULE_DIR=$TOOLS_MODULE_DIR
  BUILD_LOCK=$HELM_LOCK
  check_go
  # helm's own Makefile stamps the version (without it `helm version` says
  # "v3.22" plus "+unreleased") and the Kubernetes version of its client-go,
  # which `helm template` and `helm lint` use as .Capabilities.KubeVersion.
  local k8s minor ldflags="-s -w" v=helm.sh/helm/v3
  k8s=$(module_version k8s.io/client-go)
  minor=$(cut -d. -f2 <<<"$k8s")
  ldflags+=" -X $v/internal/version.version=$HELM_VERSION -X $v/internal/version.metadata="
  ldflags+=" -X $v/internal/version.gitTreeState=clean"
  ldflags+=" -X $v/pkg/lint/rules.k8sVersionMajor=1 -X $v/pkg/lint/rules.k8sVersionMinor=$minor"
  ldflags+=" -X $v/pkg/chartutil.k8sVersionMajor=1 -X $v/pkg/chartutil.k8sVersionMinor=$minor"
  rm -f "$HELM_STAMP"
  go_build_one helm "$HELM_BIN" "$ldflags" "about 1-2 minutes" "$v/cmd/helm" "$HELM_VERSION"
  helm_source_hash >"$HELM_STAMP.tmp.$$" && mv -f "$HELM_STAMP.tmp.$$" "$HELM_STAMP"
  info "cached in $HELM_DIR"
  release_lock "$lock_fd"
}

ensure_helm() {
  [[ ! -d $HELM_DIR ]] || clean_stale_tmp "$HELM_DIR"
  helm_cached && return 0
  if [[ ${PXO_NO_BUILD:-0} == 1 ]]; then
    die "helm $HELM_VERSION is not built in $HELM_DIR yet: run 'make tools' (or 'hack/tools.sh helm') first; it takes a few minutes once"
  fi
  build_helm
}

# ------------------------------------------------------------------ kstatus ---
# hack/kstatus is a module of its own (sigs.k8s.io/cli-utils would move the
# versions of helm's dependencies in hack/tools); cached by the cli-utils
# version it pins and by its source files, like helm.
KSTATUS_MODULE_DIR="$REPO_ROOT/hack/kstatus"
KSTATUS_VERSION=$(awk '$1 == "sigs.k8s.io/cli-utils" && $2 ~ /^v/ { print $2; exit }
                       $1 == "require" && $2 == "sigs.k8s.io/cli-utils" { print $3; exit }' "$KSTATUS_MODULE_DIR/go.mod")
[[ $KSTATUS_VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the sigs.k8s.io/cli-utils version from $KSTATUS_MODULE_DIR/go.mod"
KSTATUS_DIR="$CACHE_ROOT/kstatus/$KSTATUS_VERSION"
KSTATUS_BIN="$KSTATUS_DIR/kstatus"
KSTATUS_STAMP="$KSTATUS_DIR/.source-sha256"
KSTATUS_LOCK="$CACHE_ROOT/kstatus/.build.lock"

kstatus_source_hash() {
  cat "$KSTATUS_MODULE_DIR/go.mod" "$KSTATUS_MODULE_DIR/go.sum" "$KSTATUS_MODULE_DIR"/*.go | sha256sum | cut -d' ' -f1
}

kstatus_cached() {
  [[ -x $KSTATUS_BIN && -f $KSTATUS_STAMP && $(cat "$KSTATUS_STAMP") == "$(kstatus_source_hash)" ]]
}

build_kstatus() {
  mkdir -p "$KSTATUS_DIR"
  with_lock "$KSTATUS_LOCK" "kstatus build"
  local lock_fd=$LOCK_FD
  stop_leftovers "$PREV_OWNER"
  clean_stale_tmp "$KSTATUS_DIR"
  if kstatus_cached; then
    release_lock "$lock_fd"
    return 0
  fi
  MODULE_DIR=$KSTATUS_MODULE_DIR
  BUILD_LOCK=$KSTATUS_LOCK
  check_go
  rm -f "$KSTATUS_STAMP"
  go_build_one kstatus "$KSTATUS_BIN" "-s -w" "under a minute" . "cli-utils $KSTATUS_VERSION"
  kstatus_source_hash >"$KSTATUS_STAMP.tmp.$$" && mv -f "$KSTATUS_STAMP.tmp.$$" "$KSTATUS_STAMP"
  info "cached in $KSTATUS_DIR"
  release_lock "$lock_fd"
}

ensure_kstatus() {
  [[ ! -d $KSTATUS_DIR ]] || clean_stale_tmp "$KSTATUS_DIR"
  kstatus_cached && return 0
  if [[ ${PXO_NO_BUILD:-0} == 1 ]]; then
    die "kstatus (cli-utils $KSTATUS_VERSION) is not built in $KSTATUS_DIR yet: run 'make tools' (or 'hack/tools.sh kstatus') first; it takes under a minute once"
  fi
  build_kstatus
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

main() {
  case ${1:-} in
    helm) ensure_helm && printf '%s\n' "$HELM_BIN" ;;
    version) printf '%s\n' "$HELM_VERSION" ;;
    kstatus) ensure_kstatus && printf '%s\n' "$KSTATUS_BIN" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
