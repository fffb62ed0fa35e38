#!/bin/sh
# The test command: sets the machine up (packages, libvirtd, the tiny image)
# and runs every test, real guests included. Run as root.
#
#   scripts/test.sh [extra swift test arguments]
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh" --no-run
cd "$repo"
swift format lint --strict -r Sources Tests Package.swift
swift build --build-tests
swift test --skip-build "$@"
