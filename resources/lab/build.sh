#!/bin/bash
# Build the lab's cached initramfs pieces (uncompressed cpio, concatenated per run):
#   $FLINT_CACHE/lab/base.cpio   busybox, Debian's KVM modules, resources/lab/init, and the
#                                tools OCI runs need: crun, mkfs.ext4 and debugfs with their libraries,
#                                and virtiofsd (static) for virtio-fs shares
#   $FLINT_CACHE/lab/guest.cpio  the guest artifacts under /guest/ (the default bundle too)
#   $FLINT_CACHE/lab/qemu.cpio   (--with-qemu) qemu-system-x86_64, its libraries and firmware
#   $FLINT_CACHE/lab/containers.cpio  (--with-containers) podman, conmon, containerd, ctr and
#                                the runc shim, with their libraries and resources/lab/containers/
# Assumes the guest artifacts exist (resources/guest/build.sh). Prints the archive paths.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

with_qemu=no with_containers=no
for a in "$@"; do
    case $a in
        --with-qemu) with_qemu=yes ;;
        --with-containers) with_containers=yes ;;
        *) die "unknown option $a" ;;
    esac
done

out=$FLINT_CACHE/lab
deb=$FLINT_CACHE/debian
g=$FLINT_CACHE/guest
need_pkgs busybox-static cpio
mkdir -p "$out"
lock lab

newwork() { rm -rf "$out/work"; mkdir -p "$out/work"; }
# libs_of FILE... : the shared libraries (and the loader) the files need.
libs_of() { ldd "$@" | awk '$1 ~ /^\/.*[^:]$/ { print $1 } $3 ~ /^\// { print $3 }' | sort -u; }
# copy_into DIR FILE... : copy files to the same absolute paths under DIR, links resolved.
copy_into() {
    local dir=$1 f
    shift
    for f in "$@"; do
        mkdir -p "$dir$(dirname "$f")"
        cp -L "$f" "$dir$f"
    done
}
trap 'rm -rf "$out/work"' EXIT
# Cheap change detection for big inputs: name, size and mtime, not contents.
statsum() { stat -L -c '%n %s %Y' "$@"; }

# --- base ---
[ -f "$deb/modules/load-order" ] || die "no Debian modules: run resources/guest/fetch-debian-kernel.sh"
# virtiofsd (resources/guest/build-virtiofsd.sh) is static: it goes in without libraries.
virtiofsd=$FLINT_CACHE/virtiofsd/virtiofsd
[ -f "$virtiofsd" ] || die "missing $virtiofsd: run resources/guest/build.sh"
need_pkgs crun e2fsprogs
# debugfs: a user other than root builds an OCI image with it (owners, device nodes).
tools=(/usr/bin/crun /usr/sbin/mke2fs /usr/sbin/debugfs /etc/mke2fs.conf)
mapfile -t tool_libs < <(libs_of /usr/bin/crun /usr/sbin/mke2fs /usr/sbin/debugfs)
hash=$(stamp_hash "busybox $(busybox_version)" "file:$FLINT_RESOURCES/lab/init" \
    "file:$FLINT_RESOURCES/lib.sh" "$(statsum "$deb/modules"/* "${tools[@]}" "${tool_libs[@]}" "$virtiofsd")")
if ! stamp_ok "$out/base.stamp" "$hash" "$out/base.cpio"; then
    newwork
    busybox_tree "$out/work"
    install -m 755 "$FLINT_RESOURCES/lab/init" "$out/work/init"
    mkdir -p "$out/work/lib/modules" "$out/work/usr/local/bin" "$out/work/guest"
    cp "$deb/modules"/* "$out/work/lib/modules/"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$out/work/etc/passwd"
    echo 'root:x:0:' > "$out/work/etc/group"
    copy_into "$out/work" "${tools[@]}" "${tool_libs[@]}"
    ln -sf mke2fs "$out/work/usr/sbin/mkfs.ext4"
    install -m 755 "$virtiofsd" "$out/work/usr/local/bin/virtiofsd"
    cpio_pack "$out/work" "$out/base.cpio"
    stamp_write "$out/base.stamp" "$hash"
    log "built $out/base.cpio"
fi

# --- guest artifacts ---
guest_files=("$g/vmlinux" "$g/bzImage" "$g/initramfs.cpio.gz" "$g/rootfs.ext4" "$deb/vmlinuz")
for f in "${guest_files[@]}" "$g/bundle.stamp"; do
    [ -f "$f" ] || die "missing $f: run resources/guest/build.sh"
done
hash=$(stamp_hash "$(statsum "${guest_files[@]}" "$g/bundle.stamp")")
if ! stamp_ok "$out/guest.stamp" "$hash" "$out/guest.cpio"; then
    newwork
    mkdir -p "$out/work/guest"
    cp "${guest_files[@]:0:4}" "$out/work/guest/"
    cp "$deb/vmlinuz" "$out/work/guest/debian-vmlinuz"
    cp -a "$g/bundle" "$out/work/guest/bundle"
    cpio_pack "$out/work" "$out/guest.cpio"
    stamp_write "$out/guest.stamp" "$hash"
    log "built $out/guest.cpio"
fi

# --- QEMU, to compare against flint inside the lab ---
if [ "$with_qemu" = yes ]; then
    need_pkgs qemu-system-x86
    qemu=/usr/bin/qemu-system-x86_64
    # accel-tcg is a loadable module in Debian's build; carry it in case -accel tcg is wanted.
    modules=(/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so)
    # Firmware for -M microvm (qboot) and -M pc/q35 (SeaBIOS), and the -kernel option ROMs.
    firmware=(/usr/share/qemu/{qboot.rom,bios-microvm.bin,pvh.bin,linuxboot.bin,linuxboot_dma.bin}
              /usr/share/qemu/{multiboot.bin,multiboot_dma.bin,kvmvapic.bin}
              /usr/share/seabios/{bios.bin,bios-256k.bin,bios-microvm.bin})
    mapfile -t libs < <(libs_of "$qemu" "${modules[@]}")
    hash=$(stamp_hash "$(statsum "$qemu" "${modules[@]}" "${firmware[@]}" "${libs[@]}")")
    if ! stamp_ok "$out/qemu.stamp" "$hash" "$out/qemu.cpio"; then
        newwork
        copy_into "$out/work" "$qemu" "${modules[@]}" "${firmware[@]}" "${libs[@]}"
        cpio_pack "$out/work" "$out/qemu.cpio"
        stamp_write "$out/qemu.stamp" "$hash"
        log "built $out/qemu.cpio"
    fi
fi

# --- podman and containerd, to run flint as their OCI runtime ---
if [ "$with_containers" = yes ]; then
    need_pkgs podman conmon containerd golang-github-containers-common netavark iptables
    # netavark (podman's networks) runs `iptables`: the legacy one, linked in below.
    bins=(/usr/bin/podman /usr/bin/conmon /usr/bin/containerd /usr/bin/ctr
          /usr/bin/containerd-shim-runc-v2 /usr/lib/podman/netavark /usr/sbin/xtables-legacy-multi)
    files=(/etc/containers/policy.json /usr/share/containers/seccomp.json
           /usr/share/containers/containers.conf /usr/lib/x86_64-linux-gnu/xtables/*.so)
    mapfile -t libs < <(libs_of "${bins[@]}" /usr/lib/x86_64-linux-gnu/xtables/*.so)
    conf=$FLINT_RESOURCES/lab/containers
    hash=$(stamp_hash "$(statsum "${bins[@]}" "${files[@]}" "${libs[@]}")" \
        "file:$conf/storage.conf" "file:$conf/containers.conf" "file:$conf/containerd.toml" \
        "file:$conf/ptyrun.c")
    if ! stamp_ok "$out/containers.stamp" "$hash" "$out/containers.cpio"; then
        newwork
        copy_into "$out/work" "${bins[@]}" "${files[@]}" "${libs[@]}"
        install -m 644 "$conf/storage.conf" "$conf/containers.conf" "$out/work/etc/containers/"
        # A terminal for `podman run -t` (the lab has none): resources/lab/containers/ptyrun.c.
        mkdir -p "$out/work/usr/local/bin"
        gcc -static -O2 -Wall -o "$out/work/usr/local/bin/ptyrun" "$conf/ptyrun.c" \
            || die "cannot build ptyrun"
        for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
            ln -s xtables-legacy-multi "$out/work/usr/sbin/$t"
        done
        mkdir -p "$out/work/etc/containerd"
        install -m 644 "$conf/containerd.toml" "$out/work/etc/containerd/config.toml"
        cpio_pack "$out/work" "$out/containers.cpio"
        stamp_write "$out/containers.stamp" "$hash"
        log "built $out/containers.cpio"
    fi
fi

echo "$out/base.cpio"
echo "$out/guest.cpio"
[ "$with_qemu" = no ] || echo "$out/qemu.cpio"
[ "$with_containers" = no ] || echo "$out/containers.cpio"
