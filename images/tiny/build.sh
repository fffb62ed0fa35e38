#!/bin/sh
# Builds the "tiny" guest image: the Debian cloud kernel and a small initramfs
# (busybox, dropbear and the virtio modules) whose root lives in RAM.
#
#   images/tiny/build.sh OUTDIR
#
# Everything comes from Debian packages fetched with apt-get download; the host
# system is not changed. OUTDIR receives vmlinuz, initrd.img and manifest.json.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d /tmp/airlock-image-tiny.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM

# 1. Resolve the kernel package behind the linux-image-cloud-amd64 meta package.
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
if [ -z "$kernel_pkg" ]; then
    echo "build.sh: cannot resolve the cloud kernel package; run 'apt-get update' first" >&2
    exit 1
fi
packages="$kernel_pkg busybox-static dropbear-bin libc6 libcrypt1 libgmp10 libtomcrypt1 libtommath1 zlib1g"

# 2. Fetch and unpack the packages into a staging tree.
mkdir -p "$work/debs" "$work/pkg"
(cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root $packages >/dev/null)
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/pkg"
done
versions=$(cd "$work/debs" && ls *.deb | sort)

# 3. Lay out the root file system.
root="$work/root"
mkdir -p "$root"
cd "$root"
mkdir -p bin sbin etc proc sys dev tmp run root/.ssh work lib/modules \
    lib/x86_64-linux-gnu lib64 etc/dropbear var/log
chmod 0700 root root/.ssh
chmod 1777 tmp

cp "$work/pkg/bin/busybox" bin/busybox
for applet in $("$work/pkg/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "bin/$applet"
done

cp "$work/pkg/usr/sbin/dropbear" sbin/dropbear
for lib in libc.so.6 libcrypt.so.1 libgmp.so.10 libtomcrypt.so.1 libtommath.so.1 libz.so.1; do
    cp -L "$work/pkg/lib/x86_64-linux-gnu/$lib" "lib/x86_64-linux-gnu/$lib" 2>/dev/null ||
        cp -L "$work/pkg/usr/lib/x86_64-linux-gnu/$lib" "lib/x86_64-linux-gnu/$lib"
done
cp -L "$work/pkg/lib64/ld-linux-x86-64.so.2" lib64/ld-linux-x86-64.so.2

kver=${kernel_pkg#linux-image-}
moddir="$work/pkg/lib/modules/$kver/kernel"
for mod in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
    drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci net/core/failover \
    drivers/net/net_failover drivers/net/virtio_net drivers/char/hw_random/virtio-rng \
    drivers/firmware/qemu_fw_cfg drivers/block/virtio_blk; do
    cp "$moddir/$mod.ko" lib/modules/
done

cp "$here/init" sbin/airlock-boot
chmod 0755 sbin/airlock-boot
ln -sf bin/busybox init
printf '::sysinit:/sbin/airlock-boot\n::ctrlaltdel:/bin/poweroff -f\n' >etc/inittab
printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd
printf 'root:x:0:\n' >etc/group
printf 'root:*:1::::::\n' >etc/shadow
chmod 0600 etc/shadow
printf '/bin/sh\n' >etc/shells

# 4. Pack the initramfs (uncompressed: under emulation, unpacking beats inflating).
find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --reproducible --quiet >"$work/initrd.img"
cp "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinuz"

# 5. Publish atomically: the manifest is written last. (`airlock image build`
#    adds the recipe hash and moves the image into its catalog.)
content_hash=$(cat "$work/vmlinuz" "$work/initrd.img" | sha256sum | cut -d' ' -f1)
mv "$work/vmlinuz" "$out/vmlinuz"
mv "$work/initrd.img" "$out/initrd.img"
chmod 0644 "$out/vmlinuz" "$out/initrd.img"
cat >"$out/manifest.json.tmp" <<JSON
{
  "name": "tiny",
  "boot": "kernel",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "cmdline": "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off i8042.noaux i8042.nokbd",
  "sshUser": "root",
  "keyInjection": "fwcfg",
  "minimumMemoryMiB": 256,
  "contentHash": "sha256:$content_hash",
  "packages": [$(printf '%s\n' $versions | sed 's/.*/"&"/' | paste -sd, -)],
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
JSON
mv "$out/manifest.json.tmp" "$out/manifest.json"
echo "built tiny image in $out"
