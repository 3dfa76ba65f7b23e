#!/bin/bash
# Build (or reuse from the cache) a small Debian 12 system for flint: debootstrap from Debian's
# archive (minbase + systemd, udev, D-Bus for logind, iproute2, ping), Debian's stock kernel
# package (the one resources/guest/fetch-debian-kernel.sh fetched) with its initramfs-tools
# initrd, a serial console login, as an ext4 image. Prints the paths of:
#   $FLINT_CACHE/debian-rootfs/rootfs.ext4    the root filesystem (ext4, 1 GiB, sparse)
#   $FLINT_CACHE/debian-rootfs/vmlinuz        Debian's kernel (a copy of the package's /boot one)
#   $FLINT_CACHE/debian-rootfs/initrd.img     the initrd initramfs-tools built for it
# Boot it with:
#   flint run --kernel vmlinuz --initrd initrd.img --rootfs rootfs.ext4 --cpus 2 --memory 1024
# and log in on the console as root (no password: a throwaway image, keep it off the network
# you care about, or set one with `passwd`).
#
# The image stays stock but for these, which a microVM has no use for or a test needs:
# - dpkg's path-exclude leaves the kernel's GPU, sound, media, wireless, InfiniBand and staging
#   drivers out (~150 MB; the kernel and initramfs-tools are untouched);
# - /etc/fstab mounts /dev/vda on /; the hostname is flint-debian; root has no password;
# - flint-run.service: when the kernel command line has flint.run=BASE64, it runs that script
#   with bash once the system is up (the lab tests drive the guest this way); without it the
#   unit does nothing.
# Env: FLINT_DEBIAN_MIRROR (default: the mirror this host's apt uses, else deb.debian.org).
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"

out=$FLINT_CACHE/debian-rootfs
deb=$FLINT_CACHE/debian
need_pkgs debootstrap e2fsprogs
"$FLINT_RESOURCES/guest/fetch-debian-kernel.sh"
kver=$(cat "$deb/kernel-release")
pkg=linux-image-$kver
lock debian-rootfs

version=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
[ -n "$version" ] && [ "$version" != "(none)" ] || die "apt knows no $pkg: run apt-get update"
hash=$(stamp_hash "$pkg $version" "file:$0")
outputs=("$out/rootfs.ext4" "$out/vmlinuz" "$out/initrd.img")
if stamp_ok "$out/stamp" "$hash" "${outputs[@]}"; then
    printf '%s\n' "${outputs[@]}"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root (or reuse a cache built by root)"

mirror=${FLINT_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    mirror=${mirror:-http://deb.debian.org/debian}
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/flint-debian-rootfs.XXXXXX")
root=$work/root
# Never delete through a mount point: unmount what is mounted in the tree first, and keep the
# directory if that fails.
cleanup() {
    local m
    for m in "$root/proc" "$root/sys"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m"
    done
    if findmnt -rn -o TARGET | grep -q "^$root/"; then
        warn "left $work in place: something is still mounted in it"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

log "debootstrap bookworm from $mirror (a few minutes)"
quietly debootstrap debootstrap --variant=minbase \
    --include=systemd-sysv,udev,dbus,kmod,iproute2,iputils-ping,procps,linux-base,initramfs-tools,zstd \
    bookworm "$root" "$mirror"

# The kernel package, with the drivers no microVM has left out.
cat > "$root/etc/dpkg/dpkg.cfg.d/flint-microvm" <<'EOF'
# flint: drivers a microVM cannot use (resources/guest/build-debian-rootfs.sh)
path-exclude=/lib/modules/*/kernel/drivers/gpu/*
path-exclude=/lib/modules/*/kernel/drivers/media/*
path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*
path-exclude=/lib/modules/*/kernel/drivers/infiniband/*
path-exclude=/lib/modules/*/kernel/drivers/staging/*
path-exclude=/lib/modules/*/kernel/sound/*
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
EOF
(cd "$work" && apt-get download -q "$pkg=$version" >/dev/null 2>&1) \
    || die "apt-get download $pkg=$version failed"
cp "$work"/linux-image-*.deb "$root/tmp/kernel.deb"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
log "installing $pkg $version (initramfs-tools builds the initrd)"
quietly "dpkg -i $pkg" chroot "$root" env DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/kernel.deb
rm -f "$root/tmp/kernel.deb"
umount "$root/proc" "$root/sys"

echo flint-debian > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tflint-debian\n' > "$root/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"
chroot "$root" passwd -dq root
cat > "$root/usr/local/sbin/flint-run" <<'EOF'
#!/bin/sh
# Runs the bash script given base64-encoded as flint.run= on the kernel command line.
for arg in $(cat /proc/cmdline); do
    case $arg in
        flint.run=*) printf '%s' "${arg#flint.run=}" | base64 -d > /run/flint-run.sh || exit 1 ;;
    esac
done
exec /bin/bash /run/flint-run.sh
EOF
chmod 755 "$root/usr/local/sbin/flint-run"
# Type=simple: the boot counts as finished when the script starts, so the script itself can
# wait for the system to be up (`systemctl is-system-running --wait`).
cat > "$root/etc/systemd/system/flint-run.service" <<'EOF'
[Unit]
Description=Run the script given as flint.run= on the kernel command line
ConditionKernelCommandLine=flint.run
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/flint-run
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/flint-run.service "$root/etc/systemd/system/multi-user.target.wants/flint-run.service"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/usr/share/locale/"*

mkdir -p "$out"
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img.tmp"
log "root filesystem: $(du -sh "$root" | cut -f1), initrd: $(du -h "$out/initrd.img.tmp" | cut -f1)"
rm -f "$out/rootfs.ext4.tmp"
truncate -s 1G "$out/rootfs.ext4.tmp"
quietly "mkfs.ext4" mkfs.ext4 -q -F -L debian-root -d "$root" "$out/rootfs.ext4.tmp"
for f in rootfs.ext4 vmlinuz initrd.img; do mv -f "$out/$f.tmp" "$out/$f"; done
stamp_write "$out/stamp" "$hash"
printf '%s\n' "${outputs[@]}"
