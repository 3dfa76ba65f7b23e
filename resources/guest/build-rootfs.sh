#!/bin/bash
# Build the guest root disk: a 64 MiB ext4 image with static busybox and
# resources/guest/init as /sbin/init (mkfs.ext4 -d: no loop mount, no root needed).
# Output: $FLINT_CACHE/guest/rootfs.ext4
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

init=$FLINT_RESOURCES/guest/init
out=$FLINT_CACHE/guest/rootfs.ext4
need_pkgs busybox-static e2fsprogs
lock guest-rootfs

hash=$(stamp_hash "busybox $(busybox_version)" "file:$init" "file:$FLINT_RESOURCES/lib.sh")
if stamp_ok "$out.stamp" "$hash" "$out"; then
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/flint-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
busybox_tree "$work/root"
rm -f "$work/root/sbin/init"  # busybox's own init applet link
install -m 755 "$init" "$work/root/sbin/init"
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
quietly "mkfs.ext4" mkfs.ext4 -q -F -L flint-root -E root_owner=0:0 -d "$work/root" "$out.tmp" 64M
mv -f "$out.tmp" "$out"
stamp_write "$out.stamp" "$hash"
log "built $out"
