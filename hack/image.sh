#!/usr/bin/env bash
# hack/image.sh: the operator's container image, built from deploy/Dockerfile
# with podman (no Docker engine and no container registry are needed).
#
#   hack/image.sh [all]     base + build + save: what `make image` runs; prints
#                           the OCI archive's path on stdout
#   hack/image.sh base      the local Debian base image (debootstrap, cached):
#                           only when PXO_IMAGE_BASE is the local base
#   hack/image.sh build     build the image, unless the image in podman's store
#                           was built from the same inputs (then: nothing to do)
#   hack/image.sh save      write the image as an OCI archive (skipped when the
#                           archive already holds the current image)
#   hack/image.sh ref       print the image reference if the stored image is up
#                           to date with the inputs; exit 1 (with advice) if not
#   hack/image.sh inputs    print the inputs hash the image is labelled with
#   hack/image.sh podman .. run podman with this project's containers.conf
#   hack/image.sh prepare   only install podman, runc (and debootstrap) if missing
#
# The inputs are deploy/Dockerfile, the build context (pyproject.toml,
# README.md and operator/, without __pycache__ or build output), the base
# image's reference and id, and this script (it sets build arguments and labels). Their sha256 is stored in the image's label
# dev.proxmox-operator.inputs, so a second `make image` with nothing changed
# builds nothing (about a second), and `make test` can depend on it.
#
# The default base is Debian bookworm's own python3 (3.11), made here from the
# Debian mirror in apt's sources with debootstrap (about a minute, once), and
# cached outside the work tree:
#   ${PXO_CACHE_DIR:-$HOME/.cache/proxmox-operator}/images/debian-python-<suite>-<arch>.tar
# Anyone who can pull from a registry may build with a public Python image:
#   PXO_IMAGE_BASE=docker.io/library/python:3.11-slim hack/image.sh
# (or `docker build -f deploy/Dockerfile .`, whose default BASE is that image).
#
# pip inside the build trusts this machine's CA store: the bundle is mounted
# read-only over the base's /etc/ssl/certs/ca-certificates.crt for the build's
# RUN steps only (podman build -v ...:ro); the image keeps the base's own file.
#
# Progress goes to stderr; stdout carries only what a caller may capture (the
# archive path, the image reference, the hash).
#
# Environment overrides (defaults in brackets):
#   PXO_IMAGE_BASE     base image [localhost/debian-python:<suite>, made by `base`]
#   PXO_IMAGE_NAME     image name [localhost/proxmox-operator]
#   PXO_IMAGE_TAG      image tag [the version in pyproject.toml]
#   PXO_IMAGE_DIR      where the OCI archive goes [<repo>/build/image, gitignored]
#   PXO_CACHE_DIR      cache root for the base rootfs [$HOME/.cache/proxmox-operator]
#   PXO_DEBIAN_SUITE   Debian suite of the local base [bookworm]
#   PXO_DEBIAN_MIRROR  Debian mirror for debootstrap [the first one in apt's sources]
#   PXO_BUILD_CA       CA bundle pip trusts during the build [/etc/ssl/certs/ca-certificates.crt]
#   CONTAINERS_CONF    podman configuration [<repo>/hack/containers.conf]
#   PODMAN             podman binary [podman on PATH, installed with apt if absent]
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DOCKERFILE="$REPO_ROOT/deploy/Dockerfile"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO_ROOT/hack/containers.conf}

log() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'image.sh: error: %s\n' "$*" >&2; exit 1; }

project_version() {
  sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" | head -n1
}

SUITE=${PXO_DEBIAN_SUITE:-bookworm}
LOCAL_BASE="localhost/debian-python:$SUITE"
BASE=${PXO_IMAGE_BASE:-$LOCAL_BASE}
IMAGE_NAME=${PXO_IMAGE_NAME:-localhost/proxmox-operator}
IMAGE_TAG=${PXO_IMAGE_TAG:-$(project_version)}
[[ -n $IMAGE_TAG ]] || die "cannot read the version from pyproject.toml (set PXO_IMAGE_TAG)"
IMAGE="$IMAGE_NAME:$IMAGE_TAG"
IMAGE_DIR=${PXO_IMAGE_DIR:-$REPO_ROOT/build/image}
ARCHIVE="$IMAGE_DIR/proxmox-operator-$IMAGE_TAG.oci.tar"
CACHE_ROOT=${PXO_CACHE_DIR:-${HOME:?HOME is not set}/.cache/proxmox-operator}
BUILD_CA=${PXO_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
# The build mounts the CA bundle over the base's own bundle (which deploy/Dockerfile
# points pip at) for its RUN steps; the image keeps the base's file.
BUILD_CA_TARGET=/etc/ssl/certs/ca-certificates.crt
INPUTS_LABEL=dev.proxmox-operator.inputs
# The base image the image was built on (tests/image compares files with it).
FROM_LABEL=dev.proxmox-operator.base
BASE_LABEL=dev.proxmox-operator.base-key
# What the local base holds: Debian's python3 and venv, and the CA store.
BASE_PACKAGES=python3,python3-venv,ca-certificates

# Removed on exit: temporary dirs and files of this run (a killed run's leftovers
# are named *.tmp.<pid> and removed by the next run).
CLEANUP=()
on_exit() {
  local p
  for p in "${CLEANUP[@]}"; do rm -rf -- "$p"; done
}
trap on_exit EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

clean_stale_tmp() { # <dir>
  local f pid
  for f in "$1"/*.tmp.*; do
    [[ -e $f ]] || continue
    pid=${f##*.tmp.}
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
    info "removing $(basename "$f"), left by a killed run"
    rm -rf -- "$f"
  done
}

# ------------------------------------------------------------------- tools ---

# Installs Debian packages as hack/cluster.sh does for etcd-server: apt-get as
# root (or with sudo -n), the log shown only on failure.
apt_install() { # <package...>
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "$* missing, and installing needs root: run 'apt-get install $*' as root"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null 2>&1 || die "$* missing and there is no apt-get: install them and put them on PATH"
  log "installing $* with apt-get"
  local alog="${TMPDIR:-/tmp}/pxo-apt-image.$$.log"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >"$alog" 2>&1; then
    tail -n 20 "$alog" >&2
    die "'apt-get update' failed (log above, full log: $alog)"
  fi
  # No recommends: podman's (buildah, fuse-overlayfs, slirp4netns, ...) are for
  # rootless use; root podman with runc needs none of them.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$alog" 2>&1; then
    tail -n 20 "$alog" >&2
    die "'apt-get install $*' failed (log above, full log: $alog)"
  fi
  rm -f "$alog"
}

PODMAN_BIN=""
ensure_podman() {
  [[ -z $PODMAN_BIN ]] || return 0
  local missing=()
  PODMAN_BIN=${PODMAN:-$(command -v podman || true)}
  [[ -n $PODMAN_BIN ]] || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  # The local base needs debootstrap once: one apt-get run for all three.
  if ((${#missing[@]})) && [[ $BASE == "$LOCAL_BASE" ]] && ! command -v debootstrap >/dev/null 2>&1; then
    missing+=(debootstrap)
  fi
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
    PODMAN_BIN=${PODMAN:-$(command -v podman || true)}
  fi
  [[ -n $PODMAN_BIN && -x $PODMAN_BIN ]] || die "podman is not executable: '$PODMAN_BIN'"
}

pm() { "$PODMAN_BIN" "$@"; }

image_exists() { pm image exists "$1" 2>/dev/null; }

label_of() { # <image> <label>
  pm image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true
}

# ------------------------------------------------------------- local base ---

# The Debian mirror apt uses (deb822 .sources or a classic sources.list), so
# debootstrap needs no network access that apt does not already have.
debian_mirror() {
  if [[ -n ${PXO_DEBIAN_MIRROR:-} ]]; then
    printf '%s\n' "$PXO_DEBIAN_MIRROR"
    return 0
  fi
  local m=""
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' || true)
  if [[ -z $m ]]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i !~ /security/) { print $i; exit } }' || true)
  fi
  printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

# The cached rootfs is keyed by suite and architecture (its file name) and by
# what it holds (this key, also stored as a label of the imported image), so a
# change of the package list makes a new one.
base_key() {
  printf 'suite=%s arch=%s variant=minbase include=%s trim=1\n' "$SUITE" "$(dpkg --print-architecture)" "$BASE_PACKAGES" |
    sha256sum | cut -c1-16
}

cmd_base() {
  [[ $BASE == "$LOCAL_BASE" ]] || { info "base image is $BASE (PXO_IMAGE_BASE): no local base needed"; return 0; }
  ensure_podman
  local key arch tarball
  key=$(base_key)
  if image_exists "$LOCAL_BASE" && [[ $(label_of "$LOCAL_BASE" "$BASE_LABEL") == "$key" ]]; then
    info "base image $LOCAL_BASE is up to date"
    return 0
  fi
  arch=$(dpkg --print-architecture)
  mkdir -p "$CACHE_ROOT/images"
  clean_stale_tmp "$CACHE_ROOT/images"
  tarball="$CACHE_ROOT/images/debian-python-$SUITE-$arch.tar"
  if [[ ! -s $tarball || $(cat "$tarball.key" 2>/dev/null) != "$key" ]]; then
    make_rootfs_tar "$tarball" "$key"
  fi
  log "importing $tarball as $LOCAL_BASE"
  pm import --quiet --change "LABEL $BASE_LABEL=$key" --change 'CMD ["/usr/bin/python3"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap --variant=minbase --include=$BASE_PACKAGES $SUITE" "$tarball" "$LOCAL_BASE" >/dev/null
}

make_rootfs_tar() { # <tarball> <key>
  local tarball=$1 key=$2 mirror rootfs t0=$SECONDS
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  mirror=$(debian_mirror)
  rootfs="$CACHE_ROOT/images/rootfs.tmp.$$"
  CLEANUP+=("$rootfs" "$tarball.tmp.$$")
  log "making a Debian $SUITE base with python3 from $mirror (debootstrap: about a minute, once)"
  local dlog="$CACHE_ROOT/images/debootstrap.log"
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$dlog" 2>&1; then
    tail -n 20 "$dlog" >&2
    die "debootstrap failed (log above, full log: $dlog)"
  fi
  # What a container never needs: downloaded .debs, apt lists, docs but their
  # copyright files, man pages, and translations.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
  # The build host's resolver configuration is not part of the image.
  : >"$rootfs/etc/resolv.conf"
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp.$$" .
  mv -f "$tarball.tmp.$$" "$tarball"
  printf '%s\n' "$key" >"$tarball.key"
  rm -rf "$rootfs"
  info "base rootfs cached in $tarball ($(du -m "$tarball" | cut -f1) MB, $((SECONDS - t0))s)"
}

# ------------------------------------------------------------------- build ---

# The build context holds exactly what deploy/Dockerfile copies, so nothing
# else of the work tree (.venv, .cluster, ...) is sent to the builder or can
# change the hash.
make_context() { # <dir>
  mkdir -p "$1"
  tar -C "$REPO_ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=build \
    -cf - pyproject.toml README.md operator | tar -C "$1" -xf -
}

# sha256 over the Dockerfile, this script, every context file (path and
# content) and the base image's reference and id.
inputs_hash() { # <context dir>
  local base_id
  base_id=$(pm image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || true)
  {
    printf 'base %s %s\n' "$BASE" "$base_id"
    printf 'dockerfile %s\n' "$(sha256sum <"$DOCKERFILE" | cut -d' ' -f1)"
    printf 'script %s\n' "$(sha256sum <"${BASH_SOURCE[0]}" | cut -d' ' -f1)"
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
}

ensure_base_present() {
  if [[ $BASE == "$LOCAL_BASE" ]]; then
    cmd_base
  elif ! image_exists "$BASE"; then
    log "pulling $BASE"
    pm pull "$BASE" >&2
  fi
}

# Sets CONTEXT (a fresh build context, removed on exit) and HASH (its inputs).
CONTEXT=""
HASH=""
current_inputs() {
  mkdir -p "$IMAGE_DIR"
  clean_stale_tmp "$IMAGE_DIR"
  CONTEXT="$IMAGE_DIR/context.tmp.$$"
  CLEANUP+=("$CONTEXT")
  rm -rf "$CONTEXT"
  make_context "$CONTEXT"
  HASH=$(inputs_hash "$CONTEXT")
}

cmd_build() {
  ensure_podman
  ensure_base_present
  local hash t0=$SECONDS
  current_inputs
  hash=$HASH
  if image_exists "$IMAGE" && [[ $(label_of "$IMAGE" "$INPUTS_LABEL") == "$hash" ]]; then
    info "$IMAGE is up to date (inputs ${hash:0:12}): nothing to build"
    return 0
  fi
  [[ -r $BUILD_CA ]] || die "the CA bundle $BUILD_CA is not readable: set PXO_BUILD_CA to the CA bundle pip should trust"
  log "building $IMAGE from deploy/Dockerfile on $BASE (about 30 s)"
  # --network=host: the RUN steps reach PyPI as this machine does, with no
  # container network to set up. --layers=false: one build, no intermediate
  # images left in the store.
  local blog="$IMAGE_DIR/build.log"
  if ! pm build --network=host --pull=never --layers=false \
    --build-arg "BASE=$BASE" \
    --label "$INPUTS_LABEL=$hash" --label "$FROM_LABEL=$BASE" \
    -v "$BUILD_CA:$BUILD_CA_TARGET:ro" \
    -f "$DOCKERFILE" -t "$IMAGE" "$CONTEXT" >"$blog" 2>&1; then
    tail -n 30 "$blog" >&2
    die "podman build failed (log above, full log: $blog)"
  fi
  # The previous build of this tag is now unnamed: drop it (and only it).
  pm image prune --force --filter "label=$INPUTS_LABEL" >/dev/null 2>&1 || true
  info "built $IMAGE in $((SECONDS - t0))s ($(image_size "$IMAGE"))"
}

image_size() {
  local bytes
  bytes=$(pm image inspect --format '{{.Size}}' "$1" 2>/dev/null || echo 0)
  printf '%d MB' $((bytes / 1000000))
}

cmd_save() {
  ensure_podman
  image_exists "$IMAGE" || die "$IMAGE is not built: run 'hack/image.sh build' (or 'make image') first"
  local hash
  hash=$(label_of "$IMAGE" "$INPUTS_LABEL")
  mkdir -p "$IMAGE_DIR"
  clean_stale_tmp "$IMAGE_DIR"
  if [[ -s $ARCHIVE && $(cat "$ARCHIVE.inputs" 2>/dev/null) == "$hash" ]]; then
    info "$ARCHIVE is up to date"
  else
    log "saving $IMAGE as an OCI archive"
    CLEANUP+=("$ARCHIVE.tmp.$$")
    rm -f "$ARCHIVE.inputs"
    pm save --quiet --format oci-archive -o "$ARCHIVE.tmp.$$" "$IMAGE" >/dev/null
    mv -f "$ARCHIVE.tmp.$$" "$ARCHIVE"
    printf '%s\n' "$hash" >"$ARCHIVE.inputs"
    info "saved $(du -m "$ARCHIVE" | cut -f1) MB (load it with: podman load -i $ARCHIVE)"
  fi
  printf '%s\n' "$ARCHIVE"
}

# Never installs or builds anything: the tests call it under their timeout.
cmd_ref() {
  PODMAN_BIN=${PODMAN:-$(command -v podman || true)}
  [[ -n $PODMAN_BIN ]] || die "podman is not installed and $IMAGE is not built: run 'make image'"
  if [[ $BASE == "$LOCAL_BASE" ]] && ! image_exists "$LOCAL_BASE"; then
    die "$IMAGE is not built: run 'make image'"
  fi
  local hash
  current_inputs
  hash=$HASH
  image_exists "$IMAGE" || die "$IMAGE is not built: run 'make image'"
  [[ $(label_of "$IMAGE" "$INPUTS_LABEL") == "$hash" ]] ||
    die "$IMAGE was built from other inputs than the current deploy/Dockerfile, pyproject.toml, README.md, operator/, hack/image.sh and base: run 'make image'"
  printf '%s\n' "$IMAGE"
}

cmd_all() {
  local t0=$SECONDS
  cmd_build
  cmd_save
  info "image ready in $((SECONDS - t0))s: $IMAGE"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

main() {
  local cmd=${1:-all}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    all) cmd_all ;;
    base) cmd_base ;;
    build) cmd_build ;;
    save) cmd_save ;;
    ref) cmd_ref ;;
    inputs) ensure_podman && ensure_base_present && current_inputs && printf '%s\n' "$HASH" ;;
    podman) ensure_podman && exec "$PODMAN_BIN" "$@" ;;
    prepare) ensure_podman && if [[ $BASE == "$LOCAL_BASE" ]]; then command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap; fi ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
