#!/bin/sh
# Builds the "debian" guest image: a Debian 12 (bookworm) root file system on
# a qcow2 disk, booted by the Debian cloud kernel through a small initramfs of
# our own (busybox and the virtio modules) that mounts the disk and hands over
# to /sbin/airlock-init, a shell init that starts only sshd.
#
#   images/debian/build.sh OUTDIR
#
# Everything comes from Debian packages: debootstrap and apt-get fetch them
# from the Debian mirrors (AIRLOCK_DEBIAN_MIRROR and
# AIRLOCK_DEBIAN_SECURITY_MIRROR name others). The host system is not
# changed, and the disk is filled by mke2fs -d rather than through a loop
# mount, so the build also runs in a container; it needs root (for chroot,
# and so that mke2fs keeps the files' owners). OUTDIR receives vmlinuz,
# initrd.img, disk.qcow2 and manifest.json.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mirror=${AIRLOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${AIRLOCK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
# The disk's virtual size. The host may hand a job a bigger disk: the guest
# then grows the file system to fill it at boot.
disk_size=2G

if [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: run as root (debootstrap, chroot and mke2fs -d need it)" >&2
    exit 1
fi
for tool in debootstrap mke2fs qemu-img cpio modinfo; do
    if ! command -v "$tool" >/dev/null; then
        echo "build.sh: $tool is missing (apt-get install debootstrap e2fsprogs qemu-utils cpio kmod)" >&2
        exit 1
    fi
done

umask 022
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/airlock-image-debian.XXXXXX")
cleanup() {
    # debootstrap mounts /proc and /sys inside the root while it works and
    # unmounts them when it ends; after an interrupted run they may still be
    # there, and rm must never walk into them.
    for mnt in $(awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$mnt" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
    rm -f "$out/vmlinuz.tmp" "$out/initrd.img.tmp" "$out/disk.qcow2.tmp" "$out/manifest.json.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

root="$work/root"
# Runs a command inside the root, with an environment of our own rather than
# the caller's.
in_root() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive \
        chroot "$root" "$@"
}
# Runs a noisy step with its output in a log that is shown only if it fails.
logged() {
    what=$1
    shift
    if ! "$@" >"$work/step.log" 2>&1; then
        tail -n 30 "$work/step.log" >&2
        echo "build.sh: $what failed" >&2
        exit 1
    fi
}

# 1. The base system with the packages a job relies on. busybox-static gives
#    the initramfs its tools and the root a poweroff that needs no init system.
#    debootstrap keeps services from starting while it installs.
echo "build.sh: debootstrap $suite from $mirror"
if ! debootstrap --variant=minbase --merged-usr \
    --include=python3,openssh-server,git,ca-certificates,coreutils,tar,iproute2,e2fsprogs,busybox-static \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    [ ! -f "$root/debootstrap/debootstrap.log" ] || tail -n 20 "$root/debootstrap/debootstrap.log" >&2
    echo "build.sh: debootstrap failed" >&2
    exit 1
fi

# 2. Bring it up to date: debootstrap only knows "$suite main". While apt
#    runs, policy-rc.d keeps package scripts from starting services (which
#    would run on the build host).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
logged "apt-get update" in_root apt-get update
logged "apt-get upgrade" in_root apt-get -y -o Dpkg::Options::=--force-confold upgrade

# 3. The kernel: the package behind the linux-image-cloud-amd64 meta package,
#    fetched with the root's own (fresh) package lists but not installed: its
#    postinst would build Debian's initramfs, which boots slower than ours.
kernel_pkg=$(in_root apt-cache depends linux-image-cloud-amd64 |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
if [ -z "$kernel_pkg" ]; then
    echo "build.sh: cannot resolve the cloud kernel package" >&2
    exit 1
fi
kver=${kernel_pkg#linux-image-}
mkdir "$root/tmp/kernel"
in_root sh -c 'cd /tmp/kernel && apt-get download -q -o APT::Sandbox::User=root "$1" >/dev/null' sh "$kernel_pkg"
mv "$root"/tmp/kernel/*.deb "$work/"
rmdir "$root/tmp/kernel"
kernel_deb=$(ls "$work"/linux-image-*.deb)
dpkg-deb -x "$kernel_deb" "$work/kernel"
kernel_version=$(dpkg-deb -f "$kernel_deb" Version)

rm -f "$root/usr/sbin/policy-rc.d"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/*
# Manuals and message catalogs serve nobody in a guest that has neither man
# nor locales, and they are a quarter of the disk; the copyright files stay.
find "$root/usr/share/doc" ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*

# 4. Make it a guest. The init and sshd's settings are ours; the SSH host
#    keys that openssh-server's postinst made are dropped, as every job brings
#    its own; nothing of the build host (its name, its DNS) stays behind.
cp "$here/init" "$root/sbin/airlock-init"
chmod 0755 "$root/sbin/airlock-init"
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/ssh/sshd_config" <<'EOF'
# Written by images/debian/build.sh. sshd serves the Airlock host only: it
# logs in as root with a per-job key over QEMU's user network, so nothing
# here asks for names, passwords or PAM.
Port 22
AddressFamily inet
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
# Remote forwarding only: Airlock asks sshd to listen on the guest's
# loopback for each egress endpoint a job allows, and carries those
# connections itself. Nothing else is forwarded.
AllowTcpForwarding remote
GatewayPorts no
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
EOF
echo airlock >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tairlock\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# No DNS: the guest's network reaches nothing but the host's forwarded port.
: >"$root/etc/resolv.conf"
printf '/dev/vda\t/\text4\trw\t0\t0\n' >"$root/etc/fstab"
: >"$root/etc/machine-id"
# Without systemd nobody links /etc/mtab, which older tools still read.
ln -sf ../proc/self/mounts "$root/etc/mtab"
# Debian has no poweroff without an init system, and the host's job scripts
# call usleep: busybox has both.
for applet in poweroff halt reboot; do
    ln -sf /bin/busybox "$root/usr/local/sbin/$applet"
done
ln -sf /bin/busybox "$root/usr/local/bin/usleep"
mkdir -p "$root/work"
rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
rm -f "$root"/var/log/*.log "$root"/var/log/apt/*
chmod 0755 "$root"
packages=$(in_root dpkg-query -W -f '${Package}=${Version}\n')

# 5. The initramfs: busybox, the modules the guest needs before it can see its
#    disk, and an /init that mounts the disk and switches to it. ext4 and the
#    crc32c it checksums with are built into this kernel; add_module skips what
#    is built in, so they cost nothing unless a later kernel makes them modules.
rd="$work/initrd"
kdir="$work/kernel/lib/modules/$kver"
mkdir -p "$rd/bin" "$rd/dev" "$rd/lib/modules" "$rd/newroot"
cp "$root/bin/busybox" "$rd/bin/busybox"
for applet in $("$rd/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rd/bin/$applet"
done
: >"$rd/lib/modules/order"
loaded=
# Copies a module into the initramfs after the modules it depends on and
# appends it to the load order. Kbuild spells "virtio-rng" as virtio_rng, so
# names are compared with '-' as '_'. The positional parameters are the only
# variables a recursive call cannot clobber.
add_module() {
    set -- "$(echo "$1" | tr - _)"
    case " $loaded " in *" $1 "*) return 0 ;; esac
    pattern="/$(echo "$1" | sed 's/_/[-_]/g')\\.ko\$"
    if grep -Eq "$pattern" "$kdir/modules.builtin"; then
        loaded="$loaded $1"
        return 0
    fi
    set -- "$1" "$(grep -E "$pattern" "$kdir/modules.order" | head -n1)"
    if [ -z "$2" ]; then
        echo "build.sh: kernel $kver has no module $1" >&2
        exit 1
    fi
    for dep in $(modinfo -F depends "$kdir/$2" | tr , ' '); do
        add_module "$dep"
    done
    cp "$kdir/$2" "$rd/lib/modules/"
    echo "${2##*/}" >>"$rd/lib/modules/order"
    loaded="$loaded $1"
}
for mod in virtio_pci virtio_net virtio-rng qemu_fw_cfg virtio_blk ext4 crc32c_generic; do
    add_module "$mod"
done
cat >"$rd/init" <<'EOF'
#!/bin/sh
# /init of the debian image's initramfs (busybox): load the virtio drivers,
# mount the root disk and hand PID 1 over to the disk's /sbin/airlock-init.
export PATH=/bin

fail() {
    echo "airlock: $*" >/dev/ttyS0
    poweroff -f
}

mount -t devtmpfs devtmpfs /dev
while read -r mod; do
    insmod "/lib/modules/$mod" || echo "airlock: cannot load $mod" >/dev/ttyS0
done </lib/modules/order

# virtio_blk makes the node while it loads; the wait is only a safety net.
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 100 ]; do
    i=$((i + 1))
    usleep 10000
done
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount the root disk /dev/vda"
[ -x /newroot/sbin/airlock-init ] || fail "the root disk has no /sbin/airlock-init"
# airlock-init mounts /dev afresh on the new root.
umount /dev
exec switch_root /newroot /sbin/airlock-init
EOF
chmod 0755 "$rd/init"
(cd "$rd" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) >"$work/initrd.img"

# 6. The disk: ext4 on the whole disk, no partition table, filled straight
#    from the tree (mke2fs -d needs no mount). No blocks are reserved for
#    root, who runs the jobs anyway, and the inode tables and journal are
#    written now so that the guest's kernel has nothing left to zero.
logged mke2fs mke2fs -F -t ext4 -L airlock -m 0 -E lazy_itable_init=0,lazy_journal_init=0 \
    -d "$root" "$work/disk.raw" "$disk_size"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"

# 7. Publish. The old manifest goes first and the new one comes last, so a
#    half-written OUTDIR never passes for an image.
content_hash=$(cat "$work/kernel/boot/vmlinuz-$kver" "$work/initrd.img" "$work/disk.qcow2" |
    sha256sum | cut -d' ' -f1)
rm -f "$out/manifest.json"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
mv "$work/initrd.img" "$out/initrd.img.tmp"
mv "$work/disk.qcow2" "$out/disk.qcow2.tmp"
chmod 0644 "$out/vmlinuz.tmp" "$out/initrd.img.tmp" "$out/disk.qcow2.tmp"
for file in vmlinuz initrd.img disk.qcow2; do
    mv "$out/$file.tmp" "$out/$file"
done
cat >"$out/manifest.json.tmp" <<JSON
{
  "name": "debian",
  "boot": "kernel",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "disk": "disk.qcow2",
  "cmdline": "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off i8042.noaux i8042.nokbd",
  "sshUser": "root",
  "keyInjection": "fwcfg",
  "minimumMemoryMiB": 512,
  "contentHash": "sha256:$content_hash",
  "packages": [
$(printf '%s\n' "$kernel_pkg=$kernel_version" $packages | LC_ALL=C sort | sed 's/.*/    "&"/; $!s/$/,/')
  ],
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
JSON
mv "$out/manifest.json.tmp" "$out/manifest.json"
echo "built debian image in $out"
