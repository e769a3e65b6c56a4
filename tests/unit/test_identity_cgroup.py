"""cgroup path -> container, on /proc/PID/cgroup lines in the formats each runtime writes."""
import os

import pytest

from xtcp2.identity.cgroup import CgroupIndex, Container, cgroup2_mount, parse_path, parse_proc_cgroup

ID = "915d3d353d246ab989d696e4fb7cfd8ade4fdc8e81274b58c8ad4a24e361f521"
ID2 = "783aeb99c725035ef26f7920a26174b8d25416582a574ad2b0ba2f15e3109850"
POD = "pod0f9a7c3e-8d5b-4a1e-9c2f-3b6d8e1f0a27"
POD_SD = POD.replace("-", "_")

V1_CONTROLLERS = ["12:pids", "11:memory", "10:cpu,cpuacct", "9:devices", "1:name=systemd"]


def v1(path: str, v2: str = "/") -> str:
    """A hybrid host's file: every v1 controller at `path`, the v2 line at `v2`."""
    return "\n".join(f"{c}:{path}" for c in V1_CONTROLLERS) + f"\n0::{v2}\n"


CASES = [
    # (runtime, cgroup file text, expected)
    ("docker cgroupfs v1 (this machine)", v1(f"/docker/{ID}", f"/docker/{ID}"), Container(ID, "docker")),
    ("docker cgroupfs v1, v2 at root", v1(f"/docker/{ID}"), Container(ID, "docker")),
    ("docker systemd v2", f"0::/system.slice/docker-{ID}.scope\n", Container(ID, "docker")),
    ("docker systemd v1", v1(f"/system.slice/docker-{ID}.scope"), Container(ID, "docker")),
    ("docker v2 sub-cgroup", f"0::/system.slice/docker-{ID}.scope/init\n", Container(ID, "docker")),
    ("containerd CRI systemd v2",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{POD_SD}.slice/cri-containerd-{ID}.scope\n",
     Container(ID, "containerd")),
    ("containerd CRI cgroupfs v1", v1(f"/kubepods/besteffort/{POD}/{ID}"), Container(ID, "containerd")),
    ("containerd CRI cgroupfs v2", f"0::/kubepods/burstable/{POD}/{ID}\n", Container(ID, "containerd")),
    ("cri-o systemd v2",
     f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD_SD}.slice/crio-{ID}.scope\n",
     Container(ID, "cri-o")),
    ("cri-o cgroupfs v1", v1(f"/kubepods/burstable/{POD}/crio-{ID}"), Container(ID, "cri-o")),
    ("podman rootful systemd v2", f"0::/machine.slice/libpod-{ID}.scope/container\n", Container(ID, "podman")),
    ("podman rootless v2",
     f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n",
     Container(ID, "podman")),
    ("podman cgroupfs v1", v1(f"/libpod_parent/libpod-{ID}"), Container(ID, "podman")),
    ("nerdctl systemd v2", f"0::/system.slice/nerdctl-{ID}.scope\n", Container(ID, "containerd")),
    ("podman's conmon is not the container", f"0::/machine.slice/libpod-conmon-{ID}.scope\n", None),
    # captured from a rootful podman 4.3 container on this machine (cgroupfs manager, hybrid)
    ("podman cgroupfs hybrid (this machine)", v1(f"/libpod_parent/libpod-{ID}", f"/libpod_parent/libpod-{ID}"),
     Container(ID, "podman")),
    ("podman cgroupfs v2", f"0::/libpod_parent/libpod-{ID}\n", Container(ID, "podman")),
    ("podman rootful systemd v1", v1(f"/machine.slice/libpod-{ID}.scope"), Container(ID, "podman")),
    ("containerd CRI systemd v1",
     v1(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{POD_SD}.slice/cri-containerd-{ID}.scope"),
     Container(ID, "containerd")),
    ("containerd CRI cgroupfs v1, guaranteed QoS", v1(f"/kubepods/{POD}/{ID}"), Container(ID, "containerd")),
    ("containerd CRI cgroupfs v2, guaranteed QoS", f"0::/kubepods/{POD}/{ID}\n", Container(ID, "containerd")),
    ("cri-o systemd v1",
     v1(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD_SD}.slice/crio-{ID}.scope"),
     Container(ID, "cri-o")),
    ("cri-o cgroupfs v2", f"0::/kubepods/burstable/{POD}/crio-{ID}\n", Container(ID, "cri-o")),
    ("cri-o's conmon is not the container",
     f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD_SD}.slice/crio-conmon-{ID}.scope\n",
     None),
    ("cri-dockerd (docker under kubelet) systemd v2",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{POD_SD}.slice/docker-{ID}.scope\n",
     Container(ID, "docker")),
    ("host systemd v2", "0::/system.slice/sshd.service\n", None),
    ("host session v2", "0::/user.slice/user-0.slice/session-4.scope\n", None),
    ("pod slice without container", f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD_SD}.slice\n", None),
    ("32-hex job id is not a container", "4:memory:/process_api/04511add06789f938a12f7c64d5e785c\n0::/\n", None),
    ("63 hex is not an id", f"0::/docker/{ID[:63]}\n", None),
    ("uppercase hex is not an id", f"0::/docker/{ID.upper()}\n", None),
    ("host v1 hybrid", v1("/"), None),
]


@pytest.mark.parametrize("what,text,want", CASES, ids=[c[0] for c in CASES])
def test_runtime_formats(what, text, want):
    got, _ = parse_proc_cgroup(text)
    assert got == want


def test_v2_line_wins_over_v1():
    # a v1 controller left at another container's path must not win over the v2 answer
    text = f"11:memory:/docker/{ID2}\n0::/system.slice/docker-{ID}.scope\n"
    assert parse_proc_cgroup(text) == (Container(ID, "docker"), f"/system.slice/docker-{ID}.scope")


def test_v2_path_returned_even_without_container():
    assert parse_proc_cgroup("0::/user.slice\n") == (None, "/user.slice")


def test_garbage_lines_are_ignored():
    assert parse_proc_cgroup("nonsense\n\n::\n") == (None, "")
    assert parse_path("") is None and parse_path("/") is None


def test_index_maps_directory_inodes(tmp_path):
    """cgroup id = inode of the cgroup2 directory: a tree with real directories."""
    dirs = {
        f"docker/{ID}": Container(ID, "docker"),
        f"system.slice/crio-{ID2}.scope": Container(ID2, "cri-o"),
        "system.slice/sshd.service": None,
    }
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
    idx = CgroupIndex(str(tmp_path), min_interval=0)
    ids = {os.stat(tmp_path / d).st_ino: c for d, c in dirs.items()}
    got = idx.lookup_many(list(ids))
    assert got == ids
    assert idx.get(os.stat(tmp_path).st_ino) == (True, None)   # the root: the host
    assert idx.get(1) == (False, None)


def test_index_rebuilds_on_miss_at_most_once_per_interval(tmp_path):
    idx = CgroupIndex(str(tmp_path), min_interval=60)
    idx.rebuild(force=True)
    walks = idx.walks
    (tmp_path / "docker" / ID).mkdir(parents=True)
    ino = os.stat(tmp_path / "docker" / ID).st_ino
    assert idx.lookup_many([ino]) == {ino: None}   # rate limited: not seen yet
    assert idx.walks == walks
    idx._next = 0   # the interval has passed
    assert idx.lookup_many([ino]) == {ino: Container(ID, "docker")}
    assert idx.walks == walks + 1


def test_index_learns_from_a_process_path(tmp_path):
    (tmp_path / "docker" / ID).mkdir(parents=True)
    idx = CgroupIndex(str(tmp_path), min_interval=3600)
    idx.rebuild(force=True)
    (tmp_path / "docker" / ID2).mkdir()
    idx.learn(f"/docker/{ID2}", Container(ID2, "docker"))
    assert idx.get(os.stat(tmp_path / "docker" / ID2).st_ino) == (True, Container(ID2, "docker"))


def test_cgroup2_mount_found_in_mountinfo(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(
        "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "41 30 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(str(tmp_path)) == "/sys/fs/cgroup/unified"
    (tmp_path / "self" / "mountinfo").write_text("30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(str(tmp_path)) == "/sys/fs/cgroup"


def test_xtcp2client_table_shows_container_and_process():
    from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
    from xtcp2.tools.xtcp2client import TABLE_HEADER, table_row
    assert TABLE_HEADER.split()[-2:] == ["CONTAINER", "PROCESS"]
    named = pb.XtcpFlatRecord(netns=ID, container_id=ID, container_name="web", pid=42, comm="nginx")
    assert table_row(named).split()[-2:] == ["web", "nginx/42"]
    unnamed = pb.XtcpFlatRecord(netns=ID, container_id=ID)    # the API has not answered yet
    assert table_row(unnamed).split()[-2:] == [ID[:12], "-"]
    host = pb.XtcpFlatRecord(netns="default")
    assert table_row(host).split()[-2:] == ["-", "-"]
