#!/usr/bin/env bash
# Install xtcp2 on Debian 12 (as root): apt packages, a venv in .venv, the BPF objects.
#   scripts/install.sh                 runtime only; compilers only if bpf/*.bpf.o must be built
#   scripts/install.sh --test          plus what the test suite needs (servers, tools, compilers)
#   scripts/install.sh --wheel FILE    install a built wheel (it carries the BPF objects): no compilers
#   --dry-run (first argument)         print the apt packages and pip command, change nothing
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
[ "${1:-}" = "--dry-run" ] && { dry=1; shift; }
want_test=0 wheel=""
case "${1:-}" in
    --test) want_test=1 ;;
    --wheel) wheel="${2:?--wheel needs a file}" ;;
    "") ;;
    *) echo "install.sh: unknown argument ${1} (use --test, --wheel FILE or nothing)" >&2; exit 2 ;;
esac

pkgs() { grep -v -E '^\s*(#|$)' "$1"; }

# The objects are prebuilt when every bpf/*.bpf.c has a .bpf.o at least as new as it.
objects_prebuilt() {
    local src obj
    for src in bpf/*.bpf.c; do
        [ -e "$src" ] || return 1
        obj="${src%.c}.o"
        [ -f "$obj" ] && [ ! "$src" -nt "$obj" ] || return 1
    done
}

apt=$(pkgs scripts/apt-runtime.txt)
build_bpf=0
if [ "$want_test" = 1 ]; then
    apt="$apt $(pkgs scripts/apt-test.txt) $(pkgs scripts/apt-build.txt)"
    build_bpf=1
elif [ -z "$wheel" ] && ! objects_prebuilt; then
    apt="$apt $(pkgs scripts/apt-build.txt)"
    build_bpf=1
fi
if [ -n "$wheel" ]; then
    pip_args=("$wheel[all]")
elif [ "$want_test" = 1 ]; then
    pip_args=(-e '.[test]')
else
    pip_args=(-e '.[all]')
fi

if [ "$dry" = 1 ]; then
    echo "apt: $(echo $apt | tr ' ' '\n' | sort -u | tr '\n' ' ')"
    echo "pip: install ${pip_args[*]}"
    echo "build bpf: $build_bpf"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $apt

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "${pip_args[@]}"
if [ "$want_test" = 1 ]; then
    reqs=$(pkgs scripts/requirements-servers.txt || true)
    [ -z "$reqs" ] || .venv/bin/pip install -q $reqs
fi

# BPF objects for --mode bpf from a checkout; poll mode works without them.
if [ "$build_bpf" = 1 ]; then
    make -s -C bpf || echo "install.sh: BPF build failed; --mode bpf will be unavailable" >&2
fi
echo "install.sh: done (.venv ready)"
