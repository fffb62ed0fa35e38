#!/bin/bash
# A second libvirt host on this machine, reachable only as a remote one:
# its own network namespace (a veth pair to this one) and mount namespace,
# with its own virtlogd, libvirtd and sshd. Its guests' forwarded ports
# live on its own loopback, which this namespace cannot reach.
#
#   scripts/netns-host.sh up NAME INDEX FOLDER   # prints the host's libvirt URI
#   scripts/netns-host.sh kill NAME    # the host dies: its processes end, its address stays
#   scripts/netns-host.sh down NAME    # the namespace goes too
#
# 10.231.0.0/16 is routed nowhere outside these namespaces: a connection to
# the address of a host that is gone fails here, and never leaves the machine.
#
# INDEX (1-200) picks the addresses: 10.231.INDEX.1 here, 10.231.INDEX.2
# there. FOLDER receives the SSH keys (client key, known_hosts) and logs.
# Run as root. Used by the tests and the host benchmark.
set -eu

command=${1:-}
name=${2:-}
[ -n "$name" ] || { echo "usage: $0 up NAME INDEX FOLDER | kill NAME | down NAME" >&2; exit 64; }
here_if="al-${name}"
here_if=${here_if:0:15}

# Ends everything running in the namespace: the daemons and their guests.
stop_all() {
    ip netns list | grep -qw -- "$name" || return 0
    pids=$(ip netns pids "$name" || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
        [ -z "$(ip netns pids "$name" 2>/dev/null)" ] && break
        sleep 0.1
    done
}

down() {
    stop_all
    ip netns del "$name" 2>/dev/null || true
    ip link del "$here_if" 2>/dev/null || true
}

case "$command" in
kill) stop_all; exit 0 ;;
down) down; exit 0 ;;
up) ;;
*) echo "usage: $0 up NAME INDEX FOLDER | kill NAME | down NAME" >&2; exit 64 ;;
esac
index=${3:?INDEX}
folder=${4:?FOLDER}
here="10.231.$index.1"
there="10.231.$index.2"
down
mkdir -p "$folder"

# 1. The network: a veth pair, one end in the new namespace.
ip route replace unreachable 10.231.0.0/16
ip netns add "$name"
ip link add "$here_if" type veth peer name eth0 netns "$name"
ip addr add "$here/24" dev "$here_if"
ip link set "$here_if" up
ip -n "$name" addr add "$there/24" dev eth0
ip -n "$name" link set eth0 up
ip -n "$name" link set lo up

# 2. SSH: a host key, and a client key that logs in as root.
rm -f "$folder/host_key" "$folder/host_key.pub" "$folder/client_key" "$folder/client_key.pub"
ssh-keygen -q -t ed25519 -N '' -f "$folder/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$folder/client_key"
cp "$folder/client_key.pub" "$folder/authorized_keys"
echo "$there $(cut -d' ' -f1-2 "$folder/host_key.pub")" >"$folder/known_hosts"
cat >"$folder/sshd_config" <<EOF
ListenAddress $there:22
HostKey $folder/host_key
AuthorizedKeysFile $folder/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
AllowTcpForwarding yes
EOF
chmod 600 "$folder/host_key" "$folder/client_key"

# 3. The daemons, in a mount namespace of their own: private /run (libvirt's
#    sockets and pid files), libvirt's state, and Airlock's pool folder.
cat >"$folder/start.sh" <<EOF
#!/bin/bash
set -eu
# The daemons outlive whoever started this script: descriptors it inherited
# (a test runner's pipes and sockets) must not stay open in them, or
# whoever waits for those to close waits for ever.
for fd in /proc/\$\$/fd/*; do
    fd=\${fd##*/}
    if [ "\$fd" -gt 2 ]; then eval "exec \$fd>&-" 2>/dev/null || true; fi
done
for dir in /run /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /var/lib/airlock; do
    mkdir -p "\$dir"
    mount -t tmpfs -o mode=0755 tmpfs "\$dir"
done
mkdir -p /run/lock /run/libvirt /run/sshd /var/lib/libvirt/qemu /var/cache/libvirt/qemu /var/log/libvirt/qemu
setsid /usr/sbin/virtlogd -d </dev/null >"$folder/virtlogd.log" 2>&1
setsid tini -s -- /usr/sbin/libvirtd </dev/null >"$folder/libvirtd.log" 2>&1 &
setsid /usr/sbin/sshd -D -e -f "$folder/sshd_config" </dev/null >"$folder/sshd.log" 2>&1 &
for _ in \$(seq 1 100); do
    [ -S /run/libvirt/libvirt-sock ] && exit 0
    sleep 0.1
done
echo "netns-host: libvirtd did not start; see $folder/libvirtd.log" >&2
exit 1
EOF
chmod 755 "$folder/start.sh"
ip netns exec "$name" unshare -m --propagation private "$folder/start.sh" </dev/null >"$folder/start.log" 2>&1 || { cat "$folder/start.log" >&2; exit 1; }

# 4. Wait for sshd, then say how to reach the host.
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$there/22") 2>/dev/null; then
        echo "qemu+ssh://root@$there/system?keyfile=$folder/client_key&known_hosts=$folder/known_hosts&no_tty=1&no_verify=1"
        exit 0
    fi
    sleep 0.1
done
echo "netns-host: sshd did not start in '$name'; see $folder/sshd.log" >&2
exit 1
