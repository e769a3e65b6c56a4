"""A real dockerd of our own (tests/servers/dockerd.py), with --live-restore so that its
containers keep running while the tests stop it, and a busybox image built without a
registry. Under CI=true a dockerd that cannot start fails the tests instead of skipping.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ..servers.dockerd import Dockerd, start_dockerd, unavailable

IMAGE = "xtcp2-identity/busybox:1"
BUSYBOX_APPLETS = ("sh", "nc", "sleep", "cat")


def _build_image(d: Dockerd) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("busybox-static is not installed (scripts/apt-test.txt)")
    rootfs = os.path.join(d.root, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    tar = os.path.join(d.root, "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
    d.docker("import", tar, IMAGE)


@pytest.fixture(scope="session")
def dockerd():
    d = start_dockerd("xtcp2-identity-", live_restore=True)
    try:
        _build_image(d)
        yield d
    finally:
        d.destroy()
