# Shared helpers for the resources/ scripts. Source it; do not run it.
#   FLINT_CACHE   where every built artifact lives (outside git, kept between CI runs)
#   log/warn/die  messages on stderr, prefixed with the calling script's name
#   need_pkgs     install missing Debian packages (apt-get update at most once per run)
#   stamp_*       "rebuild only when the inputs changed" bookkeeping
#   lock          serialize builders so two lab runs at once do not race on the cache
# shellcheck shell=bash

FLINT_CACHE=${FLINT_CACHE:-/var/cache/flint}
export FLINT_CACHE
# shellcheck disable=SC2034  # used by the scripts that source this file
FLINT_RESOURCES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_flint_me=$(basename "$0")

log()  { printf '%s: %s\n' "$_flint_me" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$_flint_me" "$*" >&2; }
die()  { printf '%s: error: %s\n' "$_flint_me" "$*" >&2; exit 1; }

# need_pkgs PKG... : apt-get install only what is missing. The update runs at most
# once per top-level invocation (the flag is exported to child scripts).
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}) and not root to install them"
    apt_update_once
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

apt_update_once() {
    [ -n "${FLINT_APT_UPDATED:-}" ] && return 0
    log "apt-get update"
    apt-get update -q >&2 || die "apt-get update failed"
    export FLINT_APT_UPDATED=1
}

# stamp_hash ARG... : one hash over the given strings and files ("file:PATH" hashes the
# contents and base name, not the directory: clones elsewhere, e.g. CI's, share the cache).
stamp_hash() {
    local a
    for a in "$@"; do
        case $a in
            file:*) printf 'F %s\n' "$(basename "${a#file:}")"; cat "${a#file:}" ;;
            *)      printf 'S %s\n' "$a" ;;
        esac
    done | sha256sum | cut -d' ' -f1
}

# stamp_ok STAMPFILE HASH [OUTPUT...] : true if the last build used HASH and its outputs exist.
stamp_ok() {
    local stamp=$1 hash=$2 out
    shift 2
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] || return 1
    for out in "$@"; do [ -e "$out" ] || return 1; done
}

stamp_write() { printf '%s\n' "$2" > "$1.tmp" && mv -f "$1.tmp" "$1"; }

# lock NAME : hold an exclusive lock on $FLINT_CACHE/.NAME.lock until the script exits.
lock() {
    mkdir -p "$FLINT_CACHE"
    exec {_flint_lock_fd}>"$FLINT_CACHE/.$1.lock"
    flock "$_flint_lock_fd"
}

# quietly DESC CMD... : run CMD with its output kept aside; on failure show the tail and die.
quietly() {
    local desc=$1 out
    shift
    out=$(mktemp)
    if ! "$@" > "$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -f "$out"
        die "$desc failed"
    fi
    rm -f "$out"
}

# busybox_tree DIR : a minimal root in DIR with static busybox and all its applet links.
busybox_tree() {
    local dir=$1 applet
    need_pkgs busybox-static
    mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,mnt}
    chmod 1777 "$dir/tmp"
    cp /bin/busybox "$dir/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        [ -e "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
    done
    # A console node lets the kernel give init its stdio before /dev is mounted;
    # without root the inits reopen /dev/console themselves after mounting devtmpfs.
    if [ "$(id -u)" -eq 0 ]; then
        mknod -m 600 "$dir/dev/console" c 5 1
    fi
}

busybox_version() { dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true; }

# cpio_pack DIR OUT : pack DIR as an uncompressed newc archive owned by root (OUT.tmp, then renamed).
cpio_pack() {
    need_pkgs cpio
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$2.tmp"
    mv -f "$2.tmp" "$2"
}
