"""discover() on a fixture /proc tree: which namespaces, under which names, with which pids.

The tree is made here in tmp_path: regular files stand in for nsfs inodes, hard links for
bind mounts of them (same inode, as a bind mount has), symlinks for /proc/<pid>/ns/net
and /proc/self. The live behaviour on real nsfs is tested in tests/integration.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    assert (host.name, host.source, host.path) == ("self", "self", os.path.join(tree["proc"], "self", "ns", "net"))
    assert sorted(host.pids) == [100, 101]  # our pid from <proc>/self, once
    assert (a.name, a.source, a.aliases, a.pids) == ("named_a", "netns", ["named_a2"], [200])
    assert a.mounts == [("netns", os.path.join(tree["netns"], "named_a")),
                        ("netns", os.path.join(tree["netns"], "named_a2"))]
    assert (b.name, b.source, b.pids) == ("cont_b", "docker", [])
    assert (c.name, c.source, c.path, c.pids) == ("pid:500", "proc", os.path.join(tree["proc"], "500", "ns", "net"),
                                                  [500])


def test_without_proc_scan_only_mounts_and_self(tree):
    found = by_inode(discover(include_proc=False, dirs=tree["dirs"], proc=tree["proc"]))
    ino = tree["ino"]
    assert set(found) == {ino["host"], ino["a"], ino["b"]}
    assert found[ino["host"]].pids == [100] and found[ino["a"]].pids == []


def test_mount_of_our_own_namespace_takes_its_name_and_keeps_pids(tree):
    os.link(Path(tree["proc"]).parent / "nsfs" / "host", Path(tree["netns"]) / "hostns")
    host = by_inode(discover(dirs=tree["dirs"], proc=tree["proc"]))[tree["ino"]["host"]]
    assert (host.name, host.source, host.aliases) == ("hostns", "netns", ["self"])
    assert sorted(host.pids) == [100, 101]


def test_select_by_name_and_alias(tree):
    found = discover(dirs=tree["dirs"], proc=tree["proc"])
    assert {r.name for r in select(found, ["named_a2", "pid:500"]).values()} == {"named_a", "pid:500"}
    assert {r.name for r in select(found, ["self"]).values()} == {"self"}
    assert select(found, ["nosuch"]) == {}


def test_missing_mount_dirs_are_not_an_error(tree, tmp_path):
    found = discover(dirs=(str(tmp_path / "absent"),), proc=tree["proc"])
    assert {r.name for r in found.values()} == {"self", "pid:200", "pid:500"}


def test_default_proc_is_the_real_one():
    found = discover(include_proc=False, dirs=())
    (ref,) = found.values()
    assert ref.path == "/proc/self/ns/net" and ref.pids == [os.getpid()]
    assert ref.inode == os.stat("/proc/self/ns/net").st_ino
