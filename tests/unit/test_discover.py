"""discover() on a fixture /proc tree: which namespaces, under which names, with which pids.

The tree is made here in tmp_path: regular files stand in for nsfs inodes, hard links for
bind mounts of them (same inode, as a bind mount has), symlinks for /proc/<pid>/ns/net
and /proc/self. The live behaviour on real nsfs is tested in tests/integration.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from xtcp2.identity.cgroup import namespace_owner
from xtcp2.netns.discover import discover, select


@pytest.fixture
def tree(tmp_path: Path) -> dict:
    nsfs = tmp_path / "nsfs"
    nsfs.mkdir()
    for name in ("host", "a", "b", "c"):
        (nsfs / name).write_bytes(b"")
    proc = tmp_path / "proc"
    proc.mkdir()

    def pid(n: int, ns: str | None) -> None:
        d = proc / str(n) / "ns"
        d.mkdir(parents=True)
        if ns is not None:
            (d / "net").symlink_to(nsfs / ns)

    pid(100, "host")   # ourselves
    pid(101, "host")
    pid(200, "a")
    pid(300, None)     # no ns/net: a kernel thread we may not read, or an exiting process
    (proc / "400" / "ns").mkdir(parents=True)
    (proc / "400" / "ns" / "net").symlink_to(nsfs / "gone")  # exited between scandir and stat
    pid(500, "c")      # only reachable through its process
    (proc / "self").symlink_to("100")
    (proc / "net").mkdir()      # not a pid
    (proc / "sys").mkdir()
    netns, docker = tmp_path / "run" / "netns", tmp_path / "run" / "docker" / "netns"
    netns.mkdir(parents=True)
    docker.mkdir(parents=True)
    os.link(nsfs / "a", netns / "named_a")
    os.link(nsfs / "a", netns / "named_a2")  # the same namespace mounted twice
    os.link(nsfs / "b", docker / "cont_b")
    ino = {name: os.stat(nsfs / name).st_ino for name in ("host", "a", "b", "c")}
    return {"proc": str(proc), "dirs": (str(netns), str(docker)), "ino": ino, "netns": str(netns),
            "docker": str(docker)}


def by_inode(found: dict) -> dict:
    refs = list(found.values())
    assert len({r.inode for r in refs}) == len(refs), "a namespace reported twice"
    return {r.inode: r for r in refs}


def test_every_namespace_once_under_its_best_name(tree):
    found = by_inode(discover(dirs=tree["dirs"], proc=tree["proc"]))
    ino = tree["ino"]
    assert set(found) == set(ino.values())
    host, a, b, c = (found[ino[n]] for n in ("host", "a", "b", "c"))
    assert (host.name, host.source, host.path) == ("default", "self", os.path.join(tree["proc"], "self", "ns", "net"))
    assert host.aliases == ["self"]
    assert sorted(host.pids) == [100, 101]  # our pid from <proc>/self, once
    assert (a.name, a.source, a.aliases, a.pids) == ("named_a", "netns", ["named_a2"], [200])
    assert a.mounts == [("netns", os.path.join(tree["netns"], "named_a")),
                        ("netns", os.path.join(tree["netns"], "named_a2"))]
    assert (b.name, b.source, b.pids) == ("cont_b", "docker", [])
    assert (c.name, c.source, c.path, c.pids) == (f"netns:[{ino['c']}]", "proc",
                                                  os.path.join(tree["proc"], "500", "ns", "net"), [500])


def test_without_proc_scan_only_mounts_and_self(tree):
    found = by_inode(discover(include_proc=False, dirs=tree["dirs"], proc=tree["proc"]))
    ino = tree["ino"]
    assert set(found) == {ino["host"], ino["a"], ino["b"]}
    assert found[ino["host"]].pids == [100] and found[ino["a"]].pids == []


def test_mount_of_our_own_namespace_takes_its_name_and_keeps_pids(tree):
    os.link(Path(tree["proc"]).parent / "nsfs" / "host", Path(tree["netns"]) / "hostns")
    host = by_inode(discover(dirs=tree["dirs"], proc=tree["proc"]))[tree["ino"]["host"]]
    assert (host.name, host.source, host.aliases) == ("hostns", "netns", ["default", "self"])
    assert sorted(host.pids) == [100, 101]


def test_select_by_name_and_alias(tree):
    found = discover(dirs=tree["dirs"], proc=tree["proc"])
    c = f"netns:[{tree['ino']['c']}]"
    assert {r.name for r in select(found, ["named_a2", c]).values()} == {"named_a", c}
    assert {r.name for r in select(found, ["self"]).values()} == {"default"}
    assert {r.name for r in select(found, ["default"]).values()} == {"default"}
    assert select(found, ["nosuch"]) == {}


def test_missing_mount_dirs_are_not_an_error(tree, tmp_path):
    found = discover(dirs=(str(tmp_path / "absent"),), proc=tree["proc"])
    ino = tree["ino"]
    assert {r.name for r in found.values()} == {"default", f"netns:[{ino['a']}]", f"netns:[{ino['c']}]"}


def test_default_proc_is_the_real_one():
    found = discover(include_proc=False, dirs=())
    (ref,) = found.values()
    assert ref.path == "/proc/self/ns/net" and ref.pids == [os.getpid()]
    assert ref.inode == os.stat("/proc/self/ns/net").st_ino


CID_X = "1" * 64
CID_Y = "2" * 64


def test_a_namespace_is_named_after_the_container_of_its_oldest_process(tree):
    proc, nsfs = Path(tree["proc"]), Path(tree["proc"]).parent / "nsfs"
    (nsfs / "shared").write_bytes(b"")
    # Y joined X's namespace later (a pod, --network container:X); a host process too
    for pid, cgroup, start in ((610, f"0::/docker/{CID_Y}\n", 900), (620, f"0::/system.slice/docker-{CID_X}.scope\n", 500),
                               (630, "0::/user.slice\n", 100)):
        (proc / str(pid) / "ns").mkdir(parents=True)
        (proc / str(pid) / "ns" / "net").symlink_to(nsfs / "shared")
        (proc / str(pid) / "cgroup").write_text(cgroup)
        (proc / str(pid) / "stat").write_text(f"{pid} (sh) S 1 1 1 0 -1 0 " + "0 " * 12 + f"{start} 0\n")
    found = by_inode(discover(dirs=tree["dirs"], proc=tree["proc"], owner=namespace_owner))
    shared = found[os.stat(nsfs / "shared").st_ino]
    assert shared.name == CID_X and shared.aliases == [f"netns:[{shared.inode}]"]
    again = discover(dirs=tree["dirs"], proc=tree["proc"], owner=namespace_owner)
    assert select(again, [CID_X]).keys() == {shared.key}
    # without an owner function (this layer alone) the namespace keeps its anonymous name
    plain = by_inode(discover(dirs=tree["dirs"], proc=tree["proc"]))
    assert plain[shared.inode].name == f"netns:[{shared.inode}]"
