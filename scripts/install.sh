#!/usr/bin/env bash
# Install xtcp2 on Debian 12 (as root): apt packages, a venv in .venv, the BPF objects.
#   scripts/install.sh          runtime only
#   scripts/install.sh --test   plus what the test suite needs (servers, tools)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

pkgs() { grep -v -E '^\s*(#|$)' "$1"; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $(pkgs scripts/apt-runtime.txt)
if [ "$want_test" = 1 ]; then
    apt-get install -y -q --no-install-recommends $(pkgs scripts/apt-test.txt)
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
if [ "$want_test" = 1 ]; then
    .venv/bin/pip install -q -e '.[test]'
    reqs=$(pkgs scripts/requirements-servers.txt || true)
    [ -z "$reqs" ] || .venv/bin/pip install -q $reqs
else
    .venv/bin/pip install -q -e '.[all]'
fi

# BPF objects for --mode bpf; poll mode works without them.
if [ -f bpf/Makefile ]; then
    make -s -C bpf || echo "install.sh: BPF build failed; --mode bpf will be unavailable" >&2
fi
echo "install.sh: done (.venv ready)"
