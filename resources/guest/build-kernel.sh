#!/bin/bash
# Build flint's small guest kernel from Debian's linux-source-6.1 with microvm.config.
# Outputs: $FLINT_CACHE/guest/vmlinux (ELF with the PVH entry note) and
#          $FLINT_CACHE/guest/bzImage. Rebuilds only when the fragment or the
#          source package version changed. A full build takes ~2.5 min on 2 cores.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

fragment=$FLINT_RESOURCES/guest/microvm.config
out=$FLINT_CACHE/guest
tarball=/usr/src/linux-source-6.1.tar.xz

need_pkgs linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev lz4 xz-utils
lock kernel

version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
hash=$(stamp_hash "linux-source-6.1 $version" "file:$fragment")
stamp=$out/kernel.stamp
if stamp_ok "$stamp" "$hash" "$out/vmlinux" "$out/bzImage"; then
    exit 0
fi

# One unpacked tree per source version; later builds reuse it incrementally.
src=$FLINT_CACHE/src/linux-source-6.1_$version
if [ ! -f "$src/.unpacked" ]; then
    log "unpacking $tarball"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -xJf "$tarball" -C "$src.tmp" --strip-components=1
    touch "$src.tmp/.unpacked"
    mv "$src.tmp" "$src"
fi

log "configuring (tinyconfig + $(basename "$fragment"))"
cd "$src"
quietly "make tinyconfig" make ARCH=x86_64 tinyconfig
quietly "merge_config.sh" scripts/kconfig/merge_config.sh -m -O . .config "$fragment"
quietly "make olddefconfig" make ARCH=x86_64 olddefconfig

# Kconfig silently drops options whose dependencies are unmet, so check that
# every line of the fragment made it into the final .config.
satisfied() {
    case $1 in
        CONFIG_*=*) grep -qxF "$1" .config ;;
        "# CONFIG_"*" is not set") local opt=${1#\# }; ! grep -qE "^${opt%% *}=[ym]$" .config ;;
        *) return 0 ;;  # comments, blank lines
    esac
}
bad=0
while IFS= read -r line; do
    if ! satisfied "$line"; then
        opt=${line#\# }; opt=${opt%%[= ]*}
        warn "wanted '$line', .config has: $(grep -E "^(# )?${opt}[= ]" .config || echo nothing)"
        bad=1
    fi
done < "$fragment"
[ "$bad" -eq 0 ] || die "the kernel .config lacks options from $fragment (see above)"

mkdir -p "$out"
log "building vmlinux and bzImage (make -j$(nproc); takes a few minutes)"
start=$(date +%s)
quietly "kernel build" make ARCH=x86_64 -j"$(nproc)" vmlinux bzImage

# XEN_ELFNOTE_PHYS32_ENTRY is note type 18 (0x12) with owner "Xen".
readelf -n vmlinux | grep -qE 'Xen .*(0x00000012|PHYS32_ENTRY)' \
    || die "vmlinux has no PVH (Xen PHYS32_ENTRY) ELF note"

cp vmlinux "$out/vmlinux.tmp" && mv -f "$out/vmlinux.tmp" "$out/vmlinux"
cp arch/x86/boot/bzImage "$out/bzImage.tmp" && mv -f "$out/bzImage.tmp" "$out/bzImage"
cp .config "$out/kernel.config"
stamp_write "$stamp" "$hash"
log "kernel built in $(( $(date +%s) - start ))s: $out/vmlinux $out/bzImage"
