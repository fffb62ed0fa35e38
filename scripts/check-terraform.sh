#!/bin/sh
# Checks terraform/ without any provider (these machines cannot download
# one, so `terraform init` and `terraform validate` are out of reach):
#   1. terraform fmt -check, so every file is in Terraform's own layout;
#   2. scripts/check_terraform.py, which parses every .tf file with
#      python-hcl2 and checks that module calls, variables, locals, outputs
#      and the hosts_file JSON keys agree.
#
#   scripts/check-terraform.sh
#
# python-hcl2 is installed from PyPI into a venv under $TMPDIR, kept and
# reused while it holds the pinned version.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if ! command -v terraform >/dev/null 2>&1; then
    echo "check-terraform: terraform is not on PATH; install Terraform 1.5 or later (the build machines have it at /usr/local/bin/terraform)" >&2
    exit 1
fi

# A CLI config variable naming a file that does not exist only makes
# terraform print a warning on every run; without it the output is quiet.
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ]; then
    unset TF_CLI_CONFIG_FILE
fi

echo "check-terraform: terraform fmt -check"
if ! terraform fmt -check -recursive -diff -no-color terraform; then
    echo "check-terraform: terraform fmt -check failed: fix the syntax error it names, or format with: terraform fmt -recursive terraform" >&2
    exit 1
fi

# python-hcl2's output format changes between major versions, and the
# checker reads that format: keep the pin and the checker in step.
hcl2_version=8.1.4
venv=${TMPDIR:-/tmp}/airlock-check-terraform-venv
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('python-hcl2') != '$hcl2_version')" 2>/dev/null; then
    echo "check-terraform: installing python-hcl2 $hcl2_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "python-hcl2==$hcl2_version"
fi

echo "check-terraform: module interfaces"
"$venv/bin/python" scripts/check_terraform.py terraform
