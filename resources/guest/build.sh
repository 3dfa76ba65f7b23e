#!/bin/bash
# Build (or reuse from the cache) every guest artifact and print their paths.
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=../lib.sh
source "$here/../lib.sh"

"$here/build-kernel.sh"
"$here/fetch-debian-kernel.sh"
"$here/build-initramfs.sh"
"$here/build-rootfs.sh"

printf '%s\n' \
    "$FLINT_CACHE/guest/vmlinux" \
    "$FLINT_CACHE/guest/bzImage" \
    "$FLINT_CACHE/guest/initramfs.cpio.gz" \
    "$FLINT_CACHE/guest/rootfs.ext4" \
    "$FLINT_CACHE/debian/vmlinuz"
