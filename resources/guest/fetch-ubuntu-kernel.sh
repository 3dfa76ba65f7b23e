#!/bin/bash
# Fetch Ubuntu's stock generic kernel (24.04 LTS "noble", the 6.8 series, newest in
# noble-updates): a distribution kernel built with Ubuntu's own config, which has ACPI and
# virtio_mmio built in *with* CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so it sees flint's devices
# both in the DSDT and on the command line (the lab checks that each still works once).
# Prints the path of:
#   $FLINT_CACHE/ubuntu/vmlinuz     Ubuntu's bzImage (from linux-image-unsigned-6.8.0-N-generic)
# Verified end to end: Ubuntu's archive key comes from the ubuntu-keyring package of noble's
# release pocket (frozen since release) checked against the SHA256 below; that key verifies
# noble-updates' InRelease, whose hash of Packages.gz verifies the index, whose hash of the
# kernel package verifies the download. The archive is asked again at most once a day; if it
# cannot be reached, the cached kernel is used with a warning.
# Env: FLINT_UBUNTU_MIRROR (default http://archive.ubuntu.com/ubuntu).
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

mirror=${FLINT_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
keyring_deb=pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
keyring_sha256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8
out=$FLINT_CACHE/ubuntu
need_pkgs curl gpgv dpkg
lock ubuntu-kernel

if [ -f "$out/vmlinuz" ] && [ -n "$(find "$out/checked" -mmin -1440 2>/dev/null)" ]; then
    echo "$out/vmlinuz"
    exit 0
fi
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/flint-ubuntu-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT

# get PATH FILE [SHA256]: download $mirror/PATH to FILE, checking its hash if given.
get() {
    curl -fsS --retry 2 --max-time 600 "$mirror/$1" -o "$2" || return 1
    [ -z "${3:-}" ] || echo "$3  $2" | sha256sum -c --quiet - >/dev/null 2>&1 \
        || die "$1: SHA256 mismatch (a bad mirror or download?)"
}
if ! get dists/noble-updates/InRelease "$work/InRelease"; then
    [ -f "$out/vmlinuz" ] || die "cannot reach $mirror (set FLINT_UBUNTU_MIRROR?)"
    warn "cannot reach $mirror: using the cached kernel ($(cat "$out/version" 2>/dev/null))"
    echo "$out/vmlinuz"
    exit 0
fi
get "$keyring_deb" "$work/keyring.deb" "$keyring_sha256"
dpkg-deb -x "$work/keyring.deb" "$work/keyring"
gpgv --keyring "$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
    --output "$work/Release" "$work/InRelease" 2>/dev/null \
    || die "noble-updates' InRelease does not verify with Ubuntu's archive key"

index=main/binary-amd64/Packages.gz
sum=$(awk -v f="$index" '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && $3 == f { print $1 }' "$work/Release")
[ -n "$sum" ] || die "noble-updates' Release lists no $index"
get "dists/noble-updates/$index" "$work/Packages.gz" "$sum"
# The newest linux-image-unsigned-6.8.0-N-generic: "version filename sha256".
read -r version file sha < <(zcat "$work/Packages.gz" | awk -v RS= -F'\n' '
    $1 ~ /^Package: linux-image-unsigned-6\.8\.0-[0-9]+-generic$/ {
        v = f = s = ""
        for (i = 2; i <= NF; i++) {
            if ($i ~ /^Version: /) v = substr($i, 10)
            if ($i ~ /^Filename: /) f = substr($i, 11)
            if ($i ~ /^SHA256: /) s = substr($i, 9)
        }
        print v, f, s
    }' | sort -V | tail -n1) || true
[ -n "${sha:-}" ] || die "noble-updates has no linux-image-unsigned-6.8.0-*-generic"

if [ "$(cat "$out/version" 2>/dev/null)" != "$version" ] || [ ! -f "$out/vmlinuz" ]; then
    log "downloading Ubuntu's kernel $version"
    get "$file" "$work/kernel.deb" "$sha"
    dpkg-deb -x "$work/kernel.deb" "$work/root"
    set -- "$work"/root/boot/vmlinuz-*
    [ -f "$1" ] || die "no /boot/vmlinuz-* in $file"
    install -m 0644 "$1" "$out/vmlinuz.tmp" && mv -f "$out/vmlinuz.tmp" "$out/vmlinuz"
    stamp_write "$out/version" "$version"
fi
touch "$out/checked"
echo "$out/vmlinuz"
