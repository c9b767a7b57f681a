#!/usr/bin/env bash
# hack/fresh-check.sh (`make fresh-check`): what a new machine does, without needing one.
#
# A machine that has built before hides missing steps: its caches hold the built kube-apiserver, Go's module
# and build caches, pip's wheels. This clones HEAD into a temporary folder and runs `CI=true bash .ci/run` there
# with every one of those caches pointed at a new, empty folder, then prints one summary line:
#
#   fresh-check: <pytest's summary> | total <s> | control plane build <s> (kube-apiserver <s>, ...) | exit <rc>
#
# Only what is committed is checked (a warning says so when the tree has changes). The run uses its own ports,
# so a control plane already running on the default ones does not disturb it. What the check cannot empty: the
# machine's Debian packages (etcd-server once installed stays installed) and Go itself.
#
# Environment:
#   PXO_FRESH_DIR    where to work [a new mktemp -d folder]
#   PXO_FRESH_KEEP=1 keep the folder (clone, caches, ci.log) afterwards [removed when the run passed]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
WORK=${PXO_FRESH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/pxo-fresh.XXXXXX")}
KEEP=${PXO_FRESH_KEEP:-0}
CACHE=$WORK/cache

log() { printf '==> fresh-check: %s\n' "$*" >&2; }

if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]]; then
  log "warning: the work tree has uncommitted changes; only HEAD ($(git -C "$ROOT" rev-parse --short HEAD)) is checked"
fi

mkdir -p "$WORK" "$CACHE"/{pxo,go-build,go-mod,pip,xdg}
log "cloning HEAD into $WORK/main"
git clone --quiet --no-hardlinks "$ROOT" "$WORK/main"

cleanup() {
  local rc=$?
  # Stop whatever the run left (it stops its control plane itself; this is for a run that was interrupted).
  PXO_CLUSTER_DIR="$WORK/main/.cluster" bash "$WORK/main/hack/cluster.sh" down >/dev/null 2>&1 || true
  if [[ $KEEP == 1 || $rc != 0 ]]; then
    log "kept $WORK (clone, caches, ci.log)"
  else
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

log "running CI=true bash .ci/run with empty caches in $CACHE (the first build takes 6-9 minutes)"
start=$SECONDS
set +e
(
  cd "$WORK/main"
  # -modcacherw: Go's module cache is read-only by default, which would keep `rm -rf` from removing it.
  exec env -u KUBECONFIG -u VIRTUAL_ENV -u PYTHONPATH \
    CI=true \
    PXO_CACHE_DIR="$CACHE/pxo" \
    GOCACHE="$CACHE/go-build" \
    GOMODCACHE="$CACHE/go-mod" \
    GOFLAGS="-modcacherw -buildvcs=false" \
    PIP_CACHE_DIR="$CACHE/pip" \
    XDG_CACHE_HOME="$CACHE/xdg" \
    PXO_APISERVER_PORT=26443 PXO_ETCD_PORT=22379 PXO_ETCD_PEER_PORT=22380 PXO_KCM_PORT=20357 \
    bash .ci/run </dev/null
) 2>&1 | tee "$WORK/ci.log"
rc=${PIPESTATUS[0]}
set -e
total=$((SECONDS - start))

summary=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$WORK/ci.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
builds=$(sed -nE 's/^ +built ([a-z-]+) in ([0-9]+)s$/\1 \2/p' "$WORK/ci.log")
build_total=0
parts=()
while read -r name secs; do
  [[ -n $name ]] || continue
  build_total=$((build_total + secs))
  parts+=("$name ${secs}s")
done <<<"$builds"
build="control plane build ${build_total}s"
((${#parts[@]})) && build+=" ($(IFS=,; echo "${parts[*]}" | sed 's/,/, /g'))"
printf 'fresh-check: %s | total %dm%02ds | %s | exit %d\n' \
  "${summary:-no test summary (see $WORK/ci.log)}" $((total / 60)) $((total % 60)) "$build" "$rc"
exit "$rc"
