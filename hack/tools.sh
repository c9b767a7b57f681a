#!/usr/bin/env bash
# hack/tools.sh: developer tools built from source (no prebuilt binary can be
# downloaded here), each from a Go module of its own so that one tool's
# dependencies never move another's, and cached outside the work tree by the
# version its module pins and a hash of the module's files.
#
#   hack/tools.sh helm      helm, from hack/tools (once: about 1-2 minutes on 2
#                           cores): lints and renders deploy/helm
#   hack/tools.sh kstatus   kstatus' verdict on objects read from stdin, as Flux
#                           computes it (hack/kstatus, sigs.k8s.io/cli-utils;
#                           once: under a minute)
#   hack/tools.sh promtool  promtool, from hack/promtool (once: about 5-6
#                           minutes, plus its module downloads): checks and
#                           tests the chart's PrometheusRule
#   hack/tools.sh version   print the helm version pinned in hack/tools/go.mod
#
# Each prints the path of the cached binary, building it first if it is
# missing; `make tools` runs all three before the tests. Progress goes to
# stderr; stdout carries only the path, so `helm=$(hack/tools.sh helm)` works.
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

# The version of a required module, from a go.mod: bumping it there (and
# go.sum) is the whole upgrade.
module_version() { # <module path> <module dir>
  local v
  v=$(awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }
                     $1 == "require" && $2 == m { print $3; exit }' "$2/go.mod")
  [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the $1 version from $2/go.mod"
  printf '%s\n' "$v"
}

# The table of tools: where each one's module is, which required module's
# version keys its cache, what to build, and how long a first build takes.
select_tool() { # <tool>: sets T_NAME T_MODULE_DIR T_VERSION T_PACKAGE T_ESTIMATE T_DIR T_BIN T_STAMP T_LOCK
  T_NAME=$1
  local versioned
  case $1 in
    helm) T_MODULE_DIR=$REPO_ROOT/hack/tools versioned=helm.sh/helm/v3 \
      T_PACKAGE=helm.sh/helm/v3/cmd/helm T_ESTIMATE="about 1-2 minutes" ;;
    kstatus) T_MODULE_DIR=$REPO_ROOT/hack/kstatus versioned=sigs.k8s.io/cli-utils \
      T_PACKAGE=. T_ESTIMATE="under a minute" ;;
    promtool) T_MODULE_DIR=$REPO_ROOT/hack/promtool versioned=github.com/prometheus/prometheus \
      T_PACKAGE=github.com/prometheus/prometheus/cmd/promtool T_ESTIMATE="about 5-6 minutes" ;;
    *) die "unknown tool: $1" ;;
  esac
  T_VERSION=$(module_version "$versioned" "$T_MODULE_DIR")
  T_DIR="$CACHE_ROOT/$1/$T_VERSION"
  T_BIN="$T_DIR/$1"
  # Keyed by version (the path) and by the module's files (this stamp), so
  # editing them without a version bump still rebuilds.
  T_STAMP="$T_DIR/.source-sha256"
  T_LOCK="$CACHE_ROOT/$1/.build.lock"
}

# Version stamps, as each project's own build sets them.
tool_ldflags() {
  local ldflags="-s -w"
  case $T_NAME in
    helm)
      # Without them `helm version` says "v3.22" plus "+unreleased"; `helm
      # template` and `helm lint` use the Kubernetes version of its client-go
      # as .Capabilities.KubeVersion.
      local minor v=helm.sh/helm/v3
      minor=$(module_version k8s.io/client-go "$T_MODULE_DIR" | cut -d. -f2)
      ldflags+=" -X $v/internal/version.version=$T_VERSION -X $v/internal/version.metadata="
      ldflags+=" -X $v/internal/version.gitTreeState=clean"
      ldflags+=" -X $v/pkg/lint/rules.k8sVersionMajor=1 -X $v/pkg/lint/rules.k8sVersionMinor=$minor"
      ldflags+=" -X $v/pkg/chartutil.k8sVersionMajor=1 -X $v/pkg/chartutil.k8sVersionMinor=$minor" ;;
    promtool)
      # Prometheus' module v0.3XX.Y is its release 3.XX.Y; `promtool --version` says so.
      local release
      release=$(sed -E 's/^v0\.3([0-9]{2})\.([0-9]+)$/3.\1.\2/; s/^3\.0([0-9])/3.\1/' <<<"$T_VERSION")
      ldflags+=" -X github.com/prometheus/common/version.Version=$release" ;;
  esac
  printf '%s\n' "$ldflags"
}

tool_source_hash() {
  local files=("$T_MODULE_DIR/go.mod" "$T_MODULE_DIR/go.sum")
  shopt -s nullglob
  files+=("$T_MODULE_DIR"/*.go)
  shopt -u nullglob
  cat "${files[@]}" | sha256sum | cut -d' ' -f1
}

tool_cached() {
  [[ -x $T_BIN && -f $T_STAMP && $(cat "$T_STAMP") == "$(tool_source_hash)" ]]
}

build_tool() {
  mkdir -p "$T_DIR"
  with_lock "$T_LOCK" "$T_NAME build"
  local lock_fd=$LOCK_FD
  stop_leftovers "$PREV_OWNER"
  clean_stale_tmp "$T_DIR"
  if tool_cached; then
    release_lock "$lock_fd"
    return 0
  fi
  # go_build_one and check_go work on $MODULE_DIR and record the build in $BUILD_LOCK's owner file.
  MODULE_DIR=$T_MODULE_DIR
  BUILD_LOCK=$T_LOCK
  check_go
  rm -f "$T_STAMP"
  go_build_one "$T_NAME" "$T_BIN" "$(tool_ldflags)" "$T_ESTIMATE" "$T_PACKAGE" "$T_VERSION"
  tool_source_hash >"$T_STAMP.tmp.$$" && mv -f "$T_STAMP.tmp.$$" "$T_STAMP"
  info "cached in $T_DIR"
  release_lock "$lock_fd"
}

ensure_tool() { # <tool>: prints the cached binary's path
  select_tool "$1"
  [[ ! -d $T_DIR ]] || clean_stale_tmp "$T_DIR"
  if ! tool_cached; then
    if [[ ${PXO_NO_BUILD:-0} == 1 ]]; then
      die "$T_NAME $T_VERSION is not built in $T_DIR yet: run 'make tools' (or 'hack/tools.sh $T_NAME') first; it takes $T_ESTIMATE once"
    fi
    build_tool
  fi
  printf '%s\n' "$T_BIN"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

main() {
  case ${1:-} in
    helm | kstatus | promtool) ensure_tool "$1" ;;
    version) select_tool helm && printf '%s\n' "$T_VERSION" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
