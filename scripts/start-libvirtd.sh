#!/bin/bash
# Starts virtlogd and libvirtd unless libvirtd already answers. On machines
# without systemd, libvirtd runs under tini as a child subreaper, so that
# QEMU processes are reaped as soon as they exit.
set -eu

# Without udev (containers, CI) /dev/kvm may be root's alone. QEMU runs as
# libvirt-qemu, so libvirt then finds KVM unusable while its cached QEMU
# capabilities say otherwise, and probes QEMU again on every guest start
# (about 15 s each). Debian's udev rule gives the device to group kvm.
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
fi

if virsh -c qemu:///system version >/dev/null 2>&1; then
    exit 0
fi

# The daemons run for as long as the machine does: descriptors this script
# inherited (a CI runner's pipes, say) must not stay open in them, or
# whoever waits for those to close waits forever.
close_inherited() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
}
if [ -d /run/systemd/system ]; then
    systemctl start virtlogd libvirtd
else
    pgrep -x virtlogd >/dev/null || (close_inherited; exec setsid /usr/sbin/virtlogd -d </dev/null)
    (close_inherited; exec setsid tini -s -- /usr/sbin/libvirtd </dev/null >/var/log/airlock-libvirtd.log 2>&1) &
fi
i=0
until virsh -c qemu:///system version >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        echo "start-libvirtd: libvirtd did not answer within 10 s; see /var/log/airlock-libvirtd.log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "start-libvirtd: libvirtd is running"
