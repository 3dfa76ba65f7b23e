#!/bin/bash
# Build virtiofsd (the Rust vhost-user virtio-fs daemon that serves flint's virtio-fs shares)
# from crates.io, as a static binary: the lab's initramfs has no libseccomp or libcap-ng.
# Output: $FLINT_CACHE/virtiofsd/virtiofsd; its path is the only line on stdout. Rebuilds only
# when the version below or this script changed; the cargo target directory stays in
# $FLINT_CACHE/virtiofsd/target, so a rebuild is incremental. A full build takes ~80 s on 2 cores.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

version=1.14.0
out=$FLINT_CACHE/virtiofsd
bin=$out/virtiofsd
libdir=/usr/lib/x86_64-linux-gnu

# gcc and libc6-dev link the static glibc binary; the -dev packages have libseccomp.a and
# libcap-ng.a; readelf (binutils) checks the result.
need_pkgs gcc libc6-dev binutils libseccomp-dev libcap-ng-dev
command -v cargo >/dev/null || die "no cargo on PATH (virtiofsd is built from crates.io)"
lock virtiofsd

hash=$(stamp_hash "virtiofsd $version" "file:$FLINT_RESOURCES/guest/build-virtiofsd.sh")
stamp=$out/virtiofsd.stamp
if stamp_ok "$stamp" "$hash" "$bin"; then
    echo "$bin"
    exit 0
fi

mkdir -p "$out"
# Installed into a fresh root next to the output, then copied into place.
root=$(mktemp -d "$out/install.XXXXXX")
trap 'rm -rf "$root"' EXIT
log "building virtiofsd $version from crates.io (static; takes a minute or two)"
start=$(date +%s)
# --target keeps crt-static off the build scripts and proc macros (they run on the host).
# CARGO_ENCODED_RUSTFLAGS would win over RUSTFLAGS: drop any from the environment.
quietly "cargo install virtiofsd $version" \
    env -u CARGO_ENCODED_RUSTFLAGS \
    RUSTFLAGS="-C target-feature=+crt-static" \
    LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$libdir" \
    LIBCAPNG_LINK_TYPE=static LIBCAPNG_LIB_PATH="$libdir" \
    CARGO_TARGET_DIR="$out/target" \
    cargo install --root "$root" --target x86_64-unknown-linux-gnu \
    virtiofsd --version "$version" --locked

new=$root/bin/virtiofsd
[ -x "$new" ] || die "cargo install left no $new"
# Static: no program interpreter, no shared libraries. (Captured first: with pipefail, grep -q
# quitting early could fail the pipe.)
headers=$(readelf -lW "$new"; readelf -dW "$new")
if grep -qE 'INTERP|NEEDED' <<< "$headers"; then
    die "virtiofsd is not static: $(grep -E 'INTERP|NEEDED' <<< "$headers" | tr -s ' ' | tr '\n' ' ')"
fi
said=$("$new" --version)
[[ $said == *"$version"* ]] || die "$new --version says '$said', not $version"

# A copy, not a rename: cargo may hard-link the installed file to the one in its target directory.
cp "$new" "$bin.tmp" && mv -f "$bin.tmp" "$bin"
stamp_write "$stamp" "$hash"
log "virtiofsd $version built in $(( $(date +%s) - start ))s: $bin"
echo "$bin"
