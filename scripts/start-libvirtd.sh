#!/bin/sh
# Starts virtlogd and libvirtd unless libvirtd already answers. On machines
# without systemd, libvirtd runs under tini as a child subreaper, so that
# QEMU processes are reaped as soon as they exit.
set -eu

if virsh -c qemu:///system version >/dev/null 2>&1; then
    exit 0
fi
if [ -d /run/systemd/system ]; then
    systemctl start virtlogd libvirtd
else
    pgrep -x virtlogd >/dev/null || setsid /usr/sbin/virtlogd -d
    setsid tini -s -- /usr/sbin/libvirtd </dev/null >/var/log/airlock-libvirtd.log 2>&1 &
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
