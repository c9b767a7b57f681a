#!/usr/bin/env bash
# hack/tools.sh: developer tools built from source with the Go module in
# hack/tools (no prebuilt binary can be downloaded here) and cached outside the
# work tree.
#
#   hack/tools.sh helm      print the path of the cached helm binary, building
#                           it first if it is missing (once: about 1-2 minutes
#                           on 2 cores); `make tools` runs this before the tests
#   hack/tools.sh version   print the helm version pinned in hack/tools/go.mod
#   hack/tools.sh promtool  print the path of the cached promtool binary (from
#                           hack/promtool/go.mod, a module of its own), building
#                           it first if it is missing (once: about 5-6 minutes
#                           on 2 cores, plus its module downloads)
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

# hack/cluster.sh has the build machinery (locks, leftovers of killed runs, the
# Go check, a build with a heartbeat); sourcing it runs nothing.
# shellcheck source=cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/cluster.sh"
die() { printf 'tools.sh: error: %s\n' "$*" >&2; exit 1; }

TOOLS_MODULE_DIR="$REPO_ROOT/hack/tools"

# The version of a required module, from hack/tools/go.mod (or the module dir
# given): bumping it there (and go.sum) is the whole upgrade.
module_version() { # <module path> [<module dir>]
  local v dir=${2:-$TOOLS_MODULE_DIR}
  v=$(awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }
                     $1 == "require" && $2 == m { print $3; exit }' "$dir/go.mod")
  [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the $1 version from $dir/go.mod"
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

# promtool (`promtool check rules` on the chart's PrometheusRule), from its own
# module in hack/promtool so that its dependencies never move helm's. Cached
# and stamped like helm.
PROMTOOL_MODULE_DIR="$REPO_ROOT/hack/promtool"
PROMTOOL_VERSION=$(module_version github.com/prometheus/prometheus "$PROMTOOL_MODULE_DIR")
PROMTOOL_DIR="$CACHE_ROOT/promtool/$PROMTOOL_VERSION"
PROMTOOL_BIN="$PROMTOOL_DIR/promtool"
PROMTOOL_STAMP="$PROMTOOL_DIR/.source-sha256"
PROMTOOL_LOCK="$CACHE_ROOT/promtool/.build.lock"

promtool_source_hash() {
  cat "$PROMTOOL_MODULE_DIR/go.mod" "$PROMTOOL_MODULE_DIR/go.sum" | sha256sum | cut -d' ' -f1
}

promtool_cached() {
  [[ -x $PROMTOOL_BIN && -f $PROMTOOL_STAMP && $(cat "$PROMTOOL_STAMP") == "$(promtool_source_hash)" ]]
}

build_promtool() {
  mkdir -p "$PROMTOOL_DIR"
  with_lock "$PROMTOOL_LOCK" "promtool build"
  local lock_fd=$LOCK_FD
  stop_leftovers "$PREV_OWNER"
  clean_stale_tmp "$PROMTOOL_DIR"
  if promtool_cached; then
    release_lock "$lock_fd"
    return 0
  fi
  MODULE_DIR=$PROMTOOL_MODULE_DIR
  BUILD_LOCK=$PROMTOOL_LOCK
  check_go
  # Prometheus' module v0.3XX.Y is its release 3.XX.Y; `promtool --version` says so.
  local ldflags="-s -w" release
  release=$(sed -E 's/^v0\.3([0-9]{2})\.([0-9]+)$/3.\1.\2/; s/^3\.0([0-9])/3.\1/' <<<"$PROMTOOL_VERSION")
  ldflags+=" -X github.com/prometheus/common/version.Version=$release"
  rm -f "$PROMTOOL_STAMP"
  go_build_one promtool "$PROMTOOL_BIN" "$ldflags" "about 5-6 minutes" \
    github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION"
  promtool_source_hash >"$PROMTOOL_STAMP.tmp.$$" && mv -f "$PROMTOOL_STAMP.tmp.$$" "$PROMTOOL_STAMP"
  info "cached in $PROMTOOL_DIR"
  release_lock "$lock_fd"
}

ensure_promtool() {
  [[ ! -d $PROMTOOL_DIR ]] || clean_stale_tmp "$PROMTOOL_DIR"
  promtool_cached && return 0
  if [[ ${PXO_NO_BUILD:-0} == 1 ]]; then
    die "promtool $PROMTOOL_VERSION is not built in $PROMTOOL_DIR yet: run 'make tools' (or 'hack/tools.sh promtool') first; it takes a few minutes once"
  fi
  build_promtool
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

main() {
  case ${1:-} in
    helm) ensure_helm && printf '%s\n' "$HELM_BIN" ;;
    promtool) ensure_promtool && printf '%s\n' "$PROMTOOL_BIN" ;;
    version) printf '%s\n' "$HELM_VERSION" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
