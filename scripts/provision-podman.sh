#!/usr/bin/env bash
# Provision Podman as nitronb's container engine, idempotently, and print its socket path.
#
#   1. installs podman runc uidmap slirp4netns fuse-overlayfs debootstrap (and curl) when
#      missing (root);
#   2. writes <workspace>/podman/containers.conf (ulimits, runc);
#   3. makes the base image localhost/nitronb-python-base (Debian bookworm with python3,
#      cryptography, requests and pandas from Debian packages) from a cached root-filesystem
#      tarball, or with debootstrap the first time (the tarball is then cached);
#   4. starts `podman system service` on <workspace>/podman/podman.sock unless it answers already.
#
# The socket path is the only line on stdout; progress goes to stderr.
# Environment: NITRONB_WORKSPACE (default ~/.nitronb), NITRONB_BASE_IMAGE_NAME,
# NITRONB_CACHE_DIR (default /var/cache/nitronb), NITRONB_DEBIAN_MIRROR.
# nitronb.enclave.engine (start_podman_service, ensure_base_image) does the same from Python.
set -euo pipefail

WS="${NITRONB_WORKSPACE:-$HOME/.nitronb}"
BASE_IMAGE="${NITRONB_BASE_IMAGE_NAME:-localhost/nitronb-python-base}"
CACHE_DIR="${NITRONB_CACHE_DIR:-/var/cache/nitronb}"
MIRROR="${NITRONB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# python3-cffi-backend is named because debootstrap does not resolve the virtual package
# python3-cryptography depends on
INCLUDE=python3,python3-cffi-backend,python3-cryptography,python3-requests,python3-pandas
PACKAGES=(podman runc uidmap slirp4netns fuse-overlayfs debootstrap curl)

log() { echo "provision-podman: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s; }
T0=$(now)

# --- 1. packages ---------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; run this script as root to install them."
    log "installing ${missing[*]} …"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- 2. containers.conf --------------------------------------------------------------------
PODMAN_DIR="$WS/podman"
mkdir -p "$PODMAN_DIR"
chmod 700 "$WS" "$PODMAN_DIR"
CONF="$PODMAN_DIR/containers.conf"
WANT_CONF='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$WANT_CONF" ]]; then
    printf '%s\n' "$WANT_CONF" > "$CONF"
fi
export CONTAINERS_CONF="$CONF"

# --- 3. base image -------------------------------------------------------------------------
TARBALL="$CACHE_DIR/base-$SUITE.tar"
import_base() {
    podman import --quiet \
        --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD=["python3"]' \
        "$TARBALL" "$BASE_IMAGE" >/dev/null
}
if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE is present"
elif [[ -s "$TARBALL" ]]; then
    log "importing $BASE_IMAGE from the cached $TARBALL …"
    import_base
else
    [[ $(id -u) -eq 0 ]] || die "building the base image needs root (debootstrap); run this script as root."
    mkdir -p "$CACHE_DIR"
    ROOTFS=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS" "$TARBALL.part"' EXIT
    log "debootstrapping $SUITE with $INCLUDE from $MIRROR (a few minutes, once) …"
    T1=$(now)
    if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" \
            > "$CACHE_DIR/debootstrap.log" 2>&1; then
        cp "$ROOTFS/debootstrap/debootstrap.log" "$CACHE_DIR/debootstrap-inner.log" 2>/dev/null || true
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        die "debootstrap failed; see $CACHE_DIR/debootstrap.log and debootstrap-inner.log"
    fi
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/*
    tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
    rm -rf "$ROOTFS"
    trap - EXIT
    log "debootstrap and tarball took $(($(now) - T1)) s; cached as $TARBALL"
    import_base
fi

# --- 4. the Docker-API service -------------------------------------------------------------
SOCK="$PODMAN_DIR/podman.sock"
PIDFILE="$PODMAN_DIR/service.pid"
ping_sock() { curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }
if [[ -S "$SOCK" ]] && ping_sock; then
    log "the service already answers on $SOCK"
else
    rm -f "$SOCK"
    log "starting podman system service on $SOCK (log: $PODMAN_DIR/service.log) …"
    setsid podman system service --time=0 "unix://$SOCK" >>"$PODMAN_DIR/service.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 1 150); do
        ping_sock && break
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 20 "$PODMAN_DIR/service.log" >&2; die "podman system service exited"; }
        sleep 0.2
    done
    ping_sock || die "podman system service does not answer on $SOCK; see $PODMAN_DIR/service.log"
fi
log "ready in $(($(now) - T0)) s"
echo "$SOCK"
