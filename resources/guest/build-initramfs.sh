#!/bin/bash
# Build the guest initramfs: static busybox + resources/guest/init as /init.
# Output: $FLINT_CACHE/guest/initramfs.cpio.gz
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

init=$FLINT_RESOURCES/guest/init
out=$FLINT_CACHE/guest/initramfs.cpio.gz
need_pkgs busybox-static cpio gzip
lock guest-initramfs

hash=$(stamp_hash "busybox $(busybox_version)" "file:$init" "file:$FLINT_RESOURCES/lib.sh")
if stamp_ok "$out.stamp" "$hash" "$out"; then
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/flint-initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
busybox_tree "$work/root"
install -m 755 "$init" "$work/root/init"
mkdir -p "$(dirname "$out")"
cpio_pack "$work/root" "$work/initramfs.cpio"
gzip -n -9 -c "$work/initramfs.cpio" > "$out.tmp"
mv -f "$out.tmp" "$out"
stamp_write "$out.stamp" "$hash"
log "built $out"
