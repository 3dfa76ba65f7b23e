#!/bin/bash
# Build (or reuse from the cache) every guest artifact and print their paths, one a line.
# Keep their order (a caller may read them by position): add new ones at the end.
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=../lib.sh
source "$here/../lib.sh"

"$here/build-kernel.sh"
"$here/fetch-debian-kernel.sh"
"$here/build-initramfs.sh"
"$here/build-rootfs.sh"
"$here/build-virtiofsd.sh" >/dev/null  # prints its path: printed below, in its place

# The default OCI bundle (busybox): what `flint bench startup` runs in the lab.
hash=$(stamp_hash "busybox $(busybox_version)" "file:$here/../oci/make-bundle")
if ! stamp_ok "$FLINT_CACHE/guest/bundle.stamp" "$hash" "$FLINT_CACHE/guest/bundle/config.json"; then
    "$here/../oci/make-bundle" "$FLINT_CACHE/guest/bundle"
    stamp_write "$FLINT_CACHE/guest/bundle.stamp" "$hash"
fi

printf '%s\n' \
    "$FLINT_CACHE/guest/vmlinux" \
    "$FLINT_CACHE/guest/bzImage" \
    "$FLINT_CACHE/guest/initramfs.cpio.gz" \
    "$FLINT_CACHE/guest/rootfs.ext4" \
    "$FLINT_CACHE/debian/vmlinuz" \
    "$FLINT_CACHE/guest/bundle" \
    "$FLINT_CACHE/virtiofsd/virtiofsd"
