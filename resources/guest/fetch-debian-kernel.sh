#!/bin/bash
# Fetch Debian's stock amd64 kernel: the lab's kernel, and a second guest kernel.
# Outputs: $FLINT_CACHE/debian/vmlinuz           Debian's bzImage
#          $FLINT_CACHE/debian/vmlinux           the same kernel as an uncompressed ELF: the
#                                                lab boots it through its PVH note, which
#                                                saves ~2.5 s of decompression under TCG
#          $FLINT_CACHE/debian/modules/*.ko      the modules the lab loads (uncompressed)
#          $FLINT_CACHE/debian/modules/load-order their names, dependencies first
# Re-downloads only when the linux-image-amd64 metapackage points at a new package.
# Env: FLINT_DEBIAN_KERNEL_PKG=linux-image-6.1.0-N-amd64 takes that package instead (to compare
# lab kernels; the Debian root filesystem follows it).
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

# What the lab needs: KVM for AMD (kvm-amd pulls kvm, irqbypass, ccp), tun, and virtio-blk on
# PCI for the disk of `resources/lab/run --with-debian`. podman's networks (netavark) need veth,
# the bridge and iptables (legacy: the tables, NAT, conntrack and the matches and targets its
# rules use; conntrack's libcrc32c asks the crypto API for crc32c, which modules.dep does not
# list); flint joins a container's veth to its TAP with tc (ingress qdisc, u32, mirred).
want_modules=(kvm-amd tun virtio_pci virtio_blk
              veth bridge sch_ingress cls_u32 act_mirred crc32c_generic
              ip_tables iptable_filter iptable_nat xt_MASQUERADE xt_nat xt_addrtype xt_comment
              xt_conntrack xt_mark xt_multiport xt_tcpudp)

out=$FLINT_CACHE/debian
need_pkgs apt dpkg xz-utils kmod binutils
lock debian-kernel

# Fast path: asking apt-cache costs ~1 s, so skip it while the package lists
# are unchanged since the last successful run.
lists=$(stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null || true)
quick=$(stamp_hash "$lists" "${want_modules[*]}" "${FLINT_DEBIAN_KERNEL_PKG:-}")
if [ -n "$lists" ] && stamp_ok "$out/lists.stamp" "$quick" "$out/vmlinuz" "$out/vmlinux" "$out/modules/load-order"; then
    exit 0
fi

# The metapackage's dependency names the current ABI, e.g. linux-image-6.1.0-56-amd64.
resolve() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1
}
pkg=${FLINT_DEBIAN_KERNEL_PKG:-$(resolve)}
if [ -z "$pkg" ]; then
    apt_update_once
    pkg=$(resolve)
fi
[ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a linux-image-6.1.0-*-amd64 package"
version=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')

hash=$(stamp_hash "$pkg $version" "${want_modules[*]}")
stamp=$out/stamp
if stamp_ok "$stamp" "$hash" "$out/vmlinuz" "$out/vmlinux" "$out/modules/load-order"; then
    stamp_write "$out/lists.stamp" "$quick"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/flint-debkernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "downloading $pkg $version"
if ! (cd "$work" && apt-get download -q "$pkg=$version" >/dev/null 2>&1); then
    # The package lists may be stale (old version gone from the mirror).
    apt_update_once
    version=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
    hash=$(stamp_hash "$pkg $version" "${want_modules[*]}")
    (cd "$work" && apt-get download -q "$pkg=$version" >&2) || die "apt-get download $pkg failed"
fi
dpkg-deb -x "$work"/*.deb "$work/root"

kver=${pkg#linux-image-}
moddir=$work/root/lib/modules/$kver
[ -f "$work/root/boot/vmlinuz-$kver" ] || die "no /boot/vmlinuz-$kver in $pkg"
# modules.dep is made by depmod at install time, not shipped in the .deb.
depmod -b "$work/root" "$kver" || die "depmod failed for $pkg"

# Load order from modules.dep ("mod: deps..."; modprobe loads the deps right to left).
declare -A seen=()
order=()
add_module() {
    local name=$1 path line dep deps=() i
    [ -n "${seen[$name]:-}" ] && return 0
    seen[$name]=1
    line=$(grep -E "/${name//-/[-_]}\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep") \
        || die "module $name not found in $pkg"
    path=${line%%:*}
    read -r -a deps <<< "${line#*:}"
    for (( i=${#deps[@]}-1; i>=0; i-- )); do
        dep=$(basename "${deps[i]}"); add_module "${dep%%.ko*}"
    done
    order+=("$path")
}
for m in "${want_modules[@]}"; do add_module "$m"; done

rm -rf "$work/modules"
mkdir -p "$work/modules"
for path in "${order[@]}"; do
    f=$(basename "$path")
    # busybox insmod may not understand compressed modules: store them plain.
    case $f in
        *.ko)     cp "$moddir/$path" "$work/modules/$f" ;;
        *.ko.xz)  xz -dc "$moddir/$path" > "$work/modules/${f%.xz}" ;;
        *.ko.zst) need_pkgs zstd; zstd -dcq "$moddir/$path" > "$work/modules/${f%.zst}" ;;
        *.ko.gz)  gzip -dc "$moddir/$path" > "$work/modules/${f%.gz}" ;;
    esac
    echo "${f%%.ko*}.ko" >> "$work/modules/load-order"
done

# Unpack the bzImage's payload (boot protocol >= 2.08: payload_offset at 0x248 and
# payload_length at 0x24c, counted from the protected-mode code after the setup sectors).
le32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
bz=$work/root/boot/vmlinuz-$kver
setup_sects=$(od -An -t u1 -j $((0x1f1)) -N 1 "$bz" | tr -d ' ')
[ "$setup_sects" -ne 0 ] || setup_sects=4
start=$(( (setup_sects + 1) * 512 + $(le32 "$bz" $((0x248))) ))
dd if="$bz" of="$work/payload" iflag=skip_bytes,count_bytes bs=64k status=none \
    skip="$start" count="$(le32 "$bz" $((0x24c)))"
# (the payload ends with 4 bytes of decompressed size after the stream)
case $(od -An -t x1 -N 2 "$work/payload" | tr -d ' ') in
    fd37) xz -dc --single-stream "$work/payload" > "$work/vmlinux" ;;
    *)    die "$bz's payload is not xz-compressed: teach fetch-debian-kernel.sh its format" ;;
esac
readelf -n "$work/vmlinux" | grep -qE 'Xen .*(0x00000012|PHYS32_ENTRY)' \
    || die "Debian's vmlinux has no PVH entry note: the lab cannot boot it directly"

mkdir -p "$out"
mv -f "$work/vmlinux" "$out/vmlinux"
rm -rf "$out/modules"
mv "$work/modules" "$out/modules"
cp "$work/root/boot/vmlinuz-$kver" "$out/vmlinuz.tmp" && mv -f "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$kver" > "$out/kernel-release"
stamp_write "$stamp" "$hash"
# (if apt-get update ran above, the lists changed: the next run re-checks once)
stamp_write "$out/lists.stamp" "$quick"
log "$pkg: $out/vmlinuz, modules: $(tr '\n' ' ' < "$out/modules/load-order")"
