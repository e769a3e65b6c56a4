"""Fixtures for the bpf-mode tests: built BPF object, throwaway network namespaces."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GEN = Path(__file__).with_name("conngen.py")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF, namespaces)")


@pytest.fixture(scope="session")
def bpf_object() -> Path:
    _need_root()
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "bpf")], capture_output=True, text=True)
    assert r.returncode == 0, f"make -C bpf failed: {r.stderr[-2000:]}"
    obj = ROOT / "bpf" / "tcp_events.bpf.o"
    assert obj.exists()
    return obj


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"

    @property
    def inode(self) -> int:
        return os.stat(self.path).st_ino

    def run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], check=True, capture_output=True, text=True, **kw)

    def popen(self, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], text=True, **kw)

    def generate(self, count: int, procs: int = 2, timeout: float = 120) -> list[list[int]]:
        out = self.run(sys.executable, str(GEN), "--count", str(count), "--procs", str(procs), timeout=timeout).stdout
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def generate_counted(self, count: int, procs: int = 2) -> tuple[list[list[int]], dict[str, int]]:
        """generate(), with this namespace's TcpActiveOpens / TcpPassiveOpens deltas over it."""
        before = self.snmp_tcp()
        conns = self.generate(count, procs)
        after = self.snmp_tcp()
        return conns, {k: after[k] - before.get(k, 0) for k in ("ActiveOpens", "PassiveOpens")}

    def snmp_tcp(self) -> dict[str, int]:
        lines = [ln.split() for ln in self.run("cat", "/proc/net/snmp").stdout.splitlines() if ln.startswith("Tcp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


@contextlib.contextmanager
def destroy_subscriber(ns: Netns, **kw):
    """A DestroySubscriber opened inside ns; closed (with its entering thread) on exit."""
    from xtcp2.netlink.destroy import DestroySubscriber
    from xtcp2.netns.enter import NetnsEnterer
    enter = NetnsEnterer()
    try:
        sub = enter.run_in(ns.path, lambda: DestroySubscriber.open(**kw))
        try:
            yield sub
        finally:
            sub.close()
    finally:
        enter.close()


def make_netns() -> Netns:
    name = f"xtcp2bpf-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return Netns(name)


def delete_netns(ns: Netns) -> None:
    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@pytest.fixture
def netns():
    _need_root()
    made: list[Netns] = []

    def factory() -> Netns:
        ns = make_netns()
        made.append(ns)
        return ns

    try:
        yield factory
    finally:
        for ns in made:
            delete_netns(ns)
