#!/bin/sh
# Builds the "cloudinit" test image: a stand-in for a downloaded Debian or
# Ubuntu cloud image, for the tests of 'airlock image import'.
#
#   images/cloudinit/build.sh OUTFILE
#
# OUTFILE receives one qcow2 disk (2 GiB virtual) laid out like the images that
# operators download: an MBR partition table, a boot loader of its own that the
# BIOS starts, and a Debian 12 root file system as the last partition, so that
# cloud-init's growpart can grow it to whatever disk a job is given. No key,
# user or hostname is baked in: the guest learns its hostname, SSH host key and
# authorized key from a NoCloud seed (an ISO9660 volume labelled "cidata").
#
# It runs as root and needs debootstrap, fdisk (sfdisk), dosfstools, mtools,
# syslinux, syslinux-common, e2fsprogs and qemu-utils on the host. Everything
# else comes from the Debian mirror. No loop device is used and no image is
# mounted: the file systems are built in plain files, so the recipe also runs
# inside a container. (debootstrap itself mounts /proc and /sys inside its
# target while it runs, and unmounts them before it exits.)
set -eu

out=${1:?usage: build.sh OUTFILE}
mirror=${AIRLOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${AIRLOCK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm

if [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: must run as root (debootstrap and chroot need it)" >&2
    exit 1
fi
missing=
for tool in debootstrap sfdisk mkfs.vfat mcopy syslinux mke2fs qemu-img; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
mbr_code=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$mbr_code" ] || missing="$missing $mbr_code"
if [ -n "$missing" ]; then
    echo "build.sh: missing on the host:$missing" >&2
    echo "build.sh: apt-get install debootstrap fdisk dosfstools mtools syslinux syslinux-common e2fsprogs qemu-utils" >&2
    exit 1
fi

out_dir=$(cd "$(dirname "$out")" && pwd)
out="$out_dir/$(basename "$out")"
partial="$out.partial.$$"

work=$(mktemp -d /tmp/airlock-image-cloudinit.XXXXXX)
# debootstrap mounts /proc and /sys inside the target while it runs and
# unmounts them when it exits. Should one survive a crash, removing the tree
# would descend into the host's /proc or /sys, so the tree is then left alone.
cleanup() {
    rm -f "$partial"
    if awk -v w="$work/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        echo "build.sh: $work still has mounts below it; not removing it" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

root="$work/root"
in_root() {
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# 1. A minimal Debian, then the packages of a cloud image on top. The second
# step runs apt in the chroot (rather than debootstrap --include) so that the
# point-release and security updates are installed too, as in a real image.
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    echo "build.sh: debootstrap failed" >&2
    exit 1
}
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
# Package scripts must not start daemons in the build host's namespaces.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
# initramfs-tools is set up before the kernel arrives, so that the initramfs
# built by the kernel's postinst is already right. Left alone it would ask for
# zstd, which minbase lacks, and fall back to gzip with a warning; and it picks
# the fsck to include by probing the device behind /, which does not exist in
# a chroot, so the root's type is named outright.
mkdir -p "$root/etc/initramfs-tools/conf.d"
printf 'COMPRESS=gzip\nFSTYPE=ext4\n' >"$root/etc/initramfs-tools/conf.d/airlock"

# The kernel comes from the cloud flavour (virtio drivers, no hardware zoo).
# udev is only a Recommends of systemd, but the initramfs needs it to find the
# root by UUID. ifupdown with isc-dhcp-client is what cloud-init renders the
# network for on Debian 12; fdisk gives growpart its sfdisk.
packages="linux-image-cloud-amd64 initramfs-tools systemd-sysv udev cloud-init
    cloud-guest-utils fdisk e2fsprogs openssh-server python3 ca-certificates
    iproute2 ifupdown isc-dhcp-client tar"
{
    in_root apt-get update -q &&
        in_root apt-get install -y -q --no-install-recommends $packages
} >"$work/apt.log" 2>&1 || {
    tail -n 20 "$work/apt.log" >&2
    echo "build.sh: installing the packages in the chroot failed" >&2
    exit 1
}

# 2. Find the one kernel and check that its initramfs can reach a virtio root.
# MODULES=most (the default) includes every block driver; MODULES=dep would
# look at the build host instead of the guest, so it is not used.
set -- "$root"/boot/vmlinuz-*
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
    echo "build.sh: expected exactly one kernel in /boot, found: $*" >&2
    exit 1
fi
kver=${1##*/vmlinuz-}
in_root lsinitramfs "/boot/initrd.img-$kver" >"$work/initrd.list"
for mod in virtio_pci virtio_blk; do
    if ! grep -q "/$mod\.ko" "$work/initrd.list"; then
        echo "build.sh: the initramfs lacks $mod; the guest would not find its root" >&2
        exit 1
    fi
done
if ! grep -q 'sbin/e2fsck$' "$work/initrd.list"; then
    echo "build.sh: the initramfs lacks e2fsck; the root would be mounted unchecked" >&2
    exit 1
fi
# cloud-init reads the seed after the root is up, with the modules on disk.
if [ ! -f "$root/lib/modules/$kver/kernel/fs/isofs/isofs.ko" ] &&
    ! grep -q '/isofs\.ko$' "$root/lib/modules/$kver/modules.builtin"; then
    echo "build.sh: kernel $kver has no ISO9660 support; the NoCloud seed would be unreadable" >&2
    exit 1
fi

# 3. Configure the system the way cloud images ship.
root_uuid=$(cat /proc/sys/kernel/random/uuid)
cat >"$root/etc/fstab" <<EOF
UUID=$root_uuid / ext4 rw,discard,errors=remount-ro 0 1
EOF
# debootstrap copied the build host's name and resolver; the guest gets its
# name from the seed and its resolver from DHCP.
printf 'localhost\n' >"$root/etc/hostname"
rm -f "$root/etc/resolv.conf"
cat >"$root/etc/hosts" <<EOF
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
EOF
# C.UTF-8 is built into glibc, so cloud-init's locale module has nothing to
# generate; the default (en_US.UTF-8) would run locale-gen on every first boot.
printf 'LANG=C.UTF-8\n' >"$root/etc/default/locale"

# Only the local seed is consulted: probing for EC2, OpenStack and the like
# would wait on metadata addresses that a guest without egress never reaches.
# The image has no GRUB, so grub-dpkg would only log failures.
cat >"$root/etc/cloud/cloud.cfg.d/90_airlock.cfg" <<EOF
# Written by Airlock's images/cloudinit/build.sh.
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
grub_dpkg:
  enabled: false
EOF

# 4. Strip what must differ per instance or only served the build.
rm -f "$root/usr/sbin/policy-rc.d"
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root/var/lib/cloud"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/tmp/* "$root"/var/tmp/*

# Nothing may still be mounted inside the tree, or mke2fs would copy it.
if awk -v w="$root/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    echo "build.sh: something is still mounted below $root" >&2
    exit 1
fi

# 5. The boot partition: a FAT file system with the kernel, the initramfs and
# syslinux, whose boot sector the MBR code chains to. Its hidden-sector count
# is set to the partition's start, which is where a FAT boot sector takes its
# own partition to begin. These copies are what boots; a kernel upgraded inside
# a guest would not be, which does not matter for throwaway job guests.
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
cat >"$work/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$root_uuid ro console=ttyS0
EOF
mib=1048576
sector=512
boot_start=2048
payload_mib=$(( ($(stat -c %s "$work/vmlinuz") + $(stat -c %s "$work/initrd.img")) / mib + 1 ))
# Room for one more kernel and initramfs of the same size, plus FAT overhead.
boot_mib=$(( payload_mib * 2 + 16 ))
boot_sectors=$(( boot_mib * mib / sector ))
mkfs.vfat -F 16 -n BOOT -h "$boot_start" -C "$work/boot.img" $(( boot_mib * 1024 )) >/dev/null
mcopy -i "$work/boot.img" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg" ::/
syslinux --install "$work/boot.img"

# 6. The disk: MBR, boot partition (active), root partition to the end.
disk_bytes=$(( 2048 * mib ))
root_start=$(( boot_start + boot_sectors ))
root_sectors=$(( disk_bytes / sector - root_start ))
rm -f "$work/disk.raw"
truncate -s "$disk_bytes" "$work/disk.raw"
sfdisk --quiet "$work/disk.raw" <<EOF
label: dos
unit: sectors
start=$boot_start, size=$boot_sectors, type=e, bootable
start=$root_start, size=$root_sectors, type=83
EOF
dd if="$mbr_code" of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.img" of="$work/disk.raw" bs=1M seek=$(( boot_start * sector / mib )) \
    conv=notrunc,sparse status=none

# The root file system is written in place at its partition's offset. Its
# tables are zeroed now, while that costs nothing (zeros stay holes in the
# qcow2), rather than by the guest's lazy-init thread on first boot.
used_mib=$(du -sm "$root" | cut -f1)
if [ $(( root_sectors * sector / mib )) -lt $(( used_mib + 300 )) ]; then
    echo "build.sh: the root tree ($used_mib MiB) leaves under 300 MiB free in 2 GiB" >&2
    exit 1
fi
mke2fs -q -F -t ext4 -b 4096 -U "$root_uuid" -L rootfs -d "$root" \
    -E offset=$(( root_start * sector )),lazy_itable_init=0,lazy_journal_init=0 \
    "$work/disk.raw" $(( root_sectors * sector / 4096 ))

# 7. Publish atomically, so a failed build never leaves a half image behind.
qemu-img convert -q -f raw -O qcow2 -c "$work/disk.raw" "$partial"
chmod 0644 "$partial"
mv "$partial" "$out"
echo "built cloud image ($kver, $(( $(stat -c %s "$out") / mib )) MiB, 2 GiB virtual) in $out"
