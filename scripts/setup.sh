#!/bin/sh
# One command from a fresh Debian 12 machine to a finished Airlock job:
# installs the packages, starts libvirtd if it is not running, builds the
# airlock CLI and the tiny and debian guest images, then runs examples/hello.
#
#   sudo scripts/setup.sh            # everything, then the example job
#   sudo scripts/setup.sh --no-run   # everything but the example job
#
# Environment: AIRLOCK_STATE_DIR (default /var/lib/airlock) is where images,
# the acceleration cache and per-job files live.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${AIRLOCK_STATE_DIR:-/var/lib/airlock}
run_example=1
[ "${1:-}" = "--no-run" ] && run_example=0

say() { echo "setup: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (it installs packages and starts libvirtd): sudo $0" >&2
    exit 1
fi

# 1. Packages: libvirt and QEMU, the C libraries Airlock links, and what the
#    image recipe unpacks. Installing only when something is missing keeps
#    re-runs fast.
packages="libvirt-daemon-system libvirt-dev libssh2-1-dev libarchive-dev libssl-dev libsqlite3-dev pkg-config
    qemu-system-x86 qemu-utils cpio tini openssh-server openssh-client iproute2 procps kmod
    debootstrap e2fsprogs syslinux syslinux-common mtools dosfstools fdisk"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
# sudo resets PATH: look where swift.org's toolchain is usually unpacked too.
for dir in /opt/swift/usr/bin /usr/local/swift/usr/bin; do
    if ! command -v swift >/dev/null 2>&1 && [ -x "$dir/swift" ]; then
        PATH="$dir:$PATH"
    fi
done
if ! command -v swift >/dev/null 2>&1; then
    echo "setup: the Swift toolchain (6.0 or later) is not on PATH; install it from swift.org" \
        "(see README: Quick start) and re-run, as root with your PATH: sudo env PATH=\"\$PATH\" $0" >&2
    exit 1
fi
swift_major=$(swift --version 2>/dev/null | sed -n 's/.*Swift version \([0-9]*\)\..*/\1/p' | head -n 1)
if [ -z "$swift_major" ] || [ "$swift_major" -lt 6 ]; then
    echo "setup: Airlock needs Swift 6.0 or later; 'swift --version' says: $(swift --version 2>&1 | head -n 1)" >&2
    exit 1
fi

# 2. libvirtd. Under systemd it is a unit; elsewhere (containers, CI) it is
#    started here, under tini as a child subreaper so that QEMU processes are
#    reaped the moment they exit (otherwise a destroy waits on this machine's
#    init, about 1.5 s per guest).
"$repo/scripts/start-libvirtd.sh"

# 3. The CLI.
say "building airlock"
(cd "$repo" && swift build -c release --product airlock)
previous=$(readlink /usr/local/bin/airlock 2>/dev/null || true)
if [ -n "$previous" ] && [ "$previous" != "$repo/.build/release/airlock" ]; then
    say "/usr/local/bin/airlock pointed to $previous; it now points to this checkout"
fi
ln -sf "$repo/.build/release/airlock" /usr/local/bin/airlock
say "installed /usr/local/bin/airlock"

# 4. The guest images: tiny (RAM root, seconds to build) and debian (a
#    Debian 12 root disk with python3 and git, a few minutes the first
#    time). Each build is skipped while its recipe is unchanged.
for image in tiny debian; do
    AIRLOCK_STATE_DIR="$state" airlock image build "$image" --recipes "$repo/images"
done

# 5. The example job.
if [ "$run_example" -eq 1 ]; then
    say "running examples/hello"
    cd "$repo"
    airlock run --image tiny --workload examples/hello -- sh run.sh
fi
