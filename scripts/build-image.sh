#!/usr/bin/env bash
# Build the xtcp2 image of deploy/container/Dockerfile without any registry (as root):
# a Debian 12 rootfs from Debian packages (mmdebstrap), the wheel and its dependencies
# (cp311 manylinux wheels fetched by this host's pip) installed into /opt/xtcp2 inside it,
# then `docker import`.
#   scripts/build-image.sh WHEEL [TAG]          TAG defaults to xtcp2:<wheel version>
#   scripts/build-image.sh --tar OUT WHEEL      only write the rootfs tarball (no docker)
# Needs: mmdebstrap (apt), pip, and docker for the import. EXTRAS (default kafka,valkey,s3,profile)
# and MIRROR (default http://deb.debian.org/debian) can be set in the environment.
set -euo pipefail
out_tar=""
if [ "${1:-}" = "--tar" ]; then out_tar=$(realpath -m "${2:?--tar needs a file}"); shift 2; fi
wheel=$(realpath "${1:?usage: build-image.sh WHEEL [TAG] | --tar OUT WHEEL}")
version=$(basename "$wheel" | cut -d- -f2)
tag=${2:-xtcp2:$version}
extras=${EXTRAS:-kafka,valkey,s3,profile}
mirror=${MIRROR:-http://deb.debian.org/debian}
pip=${PIP:-pip}
case "$(uname -m)" in x86_64) arch=x86_64 ;; aarch64) arch=aarch64 ;; *) echo "build-image.sh: unsupported $(uname -m)" >&2; exit 2 ;; esac

work=$(mktemp -d /tmp/xtcp2-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/wheels"
cp "$wheel" "$work/wheels/"
# Debian 12 has Python 3.11.2 and glibc 2.36: fetch wheels that run there (pip does not
# widen an explicit --platform to older manylinux tags, so they are listed).
platforms=(--platform "linux_$arch" --platform "manylinux2014_$arch")
for glibc in 2_36 2_35 2_34 2_31 2_28 2_27 2_24 2_17 2_12 2_5; do platforms+=(--platform "manylinux_${glibc}_$arch"); done
# pip evaluates environment markers for this host's Python, not the target's: packages that
# only 3.11.2 needs are named here (redis wants async-timeout below 3.11.3).
for_debian_python=("async-timeout>=4.0.3")
"$pip" download -q --dest "$work/wheels" --only-binary=:all: --implementation cp --python-version 3.11.2 \
    --abi cp311 --abi abi3 --abi none "${platforms[@]}" "$wheel[$extras]" "${for_debian_python[@]}"

tar_out=${out_tar:-$work/rootfs.tar}
mmdebstrap --variant=minbase --include=python3,python3-venv,libbpf1,iproute2,ca-certificates \
    --customize-hook='mkdir -p "$1/tmp/wheels"' \
    --customize-hook="copy-in $work/wheels/. /tmp/wheels" \
    --customize-hook='chroot "$1" python3 -m venv /opt/xtcp2' \
    --customize-hook="chroot \"\$1\" env -i PATH=/usr/bin:/bin PIP_CONFIG_FILE=/dev/null /opt/xtcp2/bin/pip install -q --no-index --no-cache-dir --disable-pip-version-check --find-links /tmp/wheels '/tmp/wheels/$(basename "$wheel")[$extras]'" \
    --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tar_out" "$mirror"
[ -n "$out_tar" ] && { echo "build-image.sh: rootfs in $out_tar"; exit 0; }

# The Dockerfile's ENV, HEALTHCHECK and ENTRYPOINT, applied by import (which refuses STOPSIGNAL;
# SIGTERM is the default anyway).
docker import \
    --change 'ENV PATH=/opt/xtcp2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'ENV XTCP_LOG_FORMAT=json' \
    --change 'HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["/opt/xtcp2/bin/xtcp2", "-healthcheck"]' \
    --change 'ENTRYPOINT ["/opt/xtcp2/bin/xtcp2"]' \
    "$tar_out" "$tag"
echo "build-image.sh: built $tag"
