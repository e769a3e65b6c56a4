"""Records name their podman container and process, through podman's Docker-compatible
API (`podman system service`), against a real rootful podman (Debian's 4.3, cgroupfs).

The same two containers as the docker tests: A listens in its own namespace
(--network none), B joins it (--network container:A) and connects. What each record
must say comes from `ss -tanpe` in the namespace and `podman inspect`; the runtime is
"podman" (from the API's /version, and the libpod cgroup path)."""
from __future__ import annotations

import json
import os

import pytest

from xtcp2.config import Config
from xtcp2.daemon import Daemon
from xtcp2.identity.cgroup import read_proc_cgroup

from ..servers.podman import ULIMITS, start_podman
from .conftest import BUSYBOX_APPLETS
from .test_docker_identity import CLIENT, SERVER, Capture, check_container_records, ss_owners, wait_for

IMAGE = "localhost/xtcp2-identity/busybox:1"


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    import shutil
    import subprocess
    p = start_podman("xtcp2-podman-")
    try:
        busybox = shutil.which("busybox")
        rootfs = tmp_path_factory.mktemp("rootfs")
        (rootfs / "bin").mkdir()
        shutil.copy(busybox, rootfs / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            os.symlink("busybox", rootfs / "bin" / applet)
        tar = str(rootfs.parent / "podman-rootfs.tar")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", tar, "."], check=True)
        p.podman("import", tar, IMAGE)
        yield p
    finally:
        p.destroy()


def run(p, name: str, *args: str) -> dict:
    p.podman("run", "-d", "--name", name, *ULIMITS, *args)
    return json.loads(p.podman("inspect", name))[0]


@pytest.fixture(scope="module")
def pair(podman):
    a = run(podman, "xtcp2-podman-a", "--network", "none", IMAGE, *SERVER)
    b = run(podman, "xtcp2-podman-b", "--network", f"container:{a['Id']}", IMAGE, *CLIENT)
    wait_for(lambda: len(ss_owners(a["State"]["Pid"])) >= 3, what="sockets in the containers")
    yield a, b


def test_cgroup_of_a_podman_container(pair):
    """The real /proc/PID/cgroup of a rootful cgroupfs podman container (v1 controllers and
    the v2 line at /libpod_parent/libpod-<id>) names it, runtime podman."""
    a, _ = pair
    c, v2 = read_proc_cgroup(a["State"]["Pid"])
    assert (c.id, c.runtime) == (a["Id"], "podman") and v2 == f"/libpod_parent/libpod-{a['Id']}"


def test_records_name_podman_containers(podman, pair):
    a, b = pair
    cfg = Config(netns=[a["Id"]], dest="null", poll_frequency=10.0, poll_timeout=10.0, resolve_container_id=True,
                 enrich_container_enable=True, docker_socket_path=podman.sock, debug_level=0)
    d = Daemon(cfg)
    try:
        wait_for(lambda: d.identity.docker.connected, what="podman's API")
        assert d.identity.docker.runtime == "podman"
        cap = Capture(d)
        info = {a["Id"]: a, b["Id"]: b}

        def all_named():
            recs = cap.poll()
            mine = [r for r in recs if r.inet_diag_msg_inode]
            return recs if mine and all(r.container_name for r in mine) else None

        recs = wait_for(all_named, timeout=60, what="names from podman's API")
        assert {r.netns for r in recs} == {a["Id"]}
        assert check_container_records(recs, info, a["State"]["Pid"], runtime="podman") >= 3
        assert {r.container_id for r in recs if r.inet_diag_msg_inode} == {a["Id"], b["Id"]}
    finally:
        d.close()
