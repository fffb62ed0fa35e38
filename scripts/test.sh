#!/bin/sh
# The test command: sets the machine up (packages, libvirtd, the tiny image)
# and runs every test, real guests included. Run as root.
#
#   scripts/test.sh [extra swift test arguments]
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh" --no-run
cd "$repo"

# What only the tests need: util-linux's script(1) gives airlock a terminal
# in the attack tests; Python's venv holds the HCL parser of the Terraform
# check.
missing=""
for p in bsdutils python3 python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

swift format lint --strict -r Sources Tests Package.swift
scripts/check-terraform.sh
swift build --build-tests

# Every scratch file of the tests (result folders, test images, state
# folders) goes under one folder, removed when the run ends. QEMU runs as
# its own user and must pass through it to the test images: 0711.
TMPDIR=$(mktemp -d /tmp/airlock-tests.XXXXXX)
export TMPDIR
chmod 711 "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
trap 'exit 130' INT TERM
swift test --skip-build "$@"
