"""Real network namespaces joined by a veth pair, with a real lldpd (Debian `lldpd`) in each.

Namespace A is "our host": its default route leaves through veth end `a_if`; B is "the
switch": its lldpd gets a system name and port description of its own, announces its
port by interface name, and A's lldpd hears it. Everything made here is removed after.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass

import pytest

from tests.waiting import wait_for


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@dataclass
class VethPair:
    a: str          # namespace names
    b: str
    a_if: str       # interface names (each in its namespace)
    b_if: str
    a_addr: str = "10.78.0.1"
    b_addr: str = "10.78.0.2"

    def mac(self, side: str) -> str:
        ns, dev = (self.a, self.a_if) if side == "a" else (self.b, self.b_if)
        return open_in_ns(ns, f"/sys/class/net/{dev}/address").strip()


def open_in_ns(ns: str, path: str) -> str:
    """A sysfs file as seen from inside `ns` (ip netns exec remounts /sys for it)."""
    return subprocess.run(["ip", "netns", "exec", ns, "cat", path], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def veth_pair():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tag = uuid.uuid4().hex[:6]
    pair = VethPair(a=f"uplink-{tag}-a", b=f"uplink-{tag}-b", a_if=f"upl{tag}a", b_if=f"upl{tag}b")
    made = []
    try:
        for ns in (pair.a, pair.b):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", pair.a, "link", "add", pair.a_if, "type", "veth", "peer", "name", pair.b_if, "netns", pair.b)
        ip("-n", pair.a, "addr", "add", f"{pair.a_addr}/24", "dev", pair.a_if)
        ip("-n", pair.b, "addr", "add", f"{pair.b_addr}/24", "dev", pair.b_if)
        ip("-n", pair.a, "link", "set", pair.a_if, "up")
        ip("-n", pair.b, "link", "set", pair.b_if, "up")
        ip("-n", pair.a, "route", "add", "default", "via", pair.b_addr)
        yield pair
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@dataclass
class LldpPair:
    veth: VethPair
    a_sock: str
    b_sock: str
    peer_name: str
    peer_port_descr: str

    def cli(self, sock: str, *args: str) -> str:
        return subprocess.run(["lldpcli", "-u", sock, *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout


@pytest.fixture
def lldp_dir():
    """A directory for lldpd sockets. lldpcli is setuid _lldpd, so the path must be
    searchable by that user (pytest's tmp_path is not)."""
    d = tempfile.mkdtemp(prefix="uplink-lldpd-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_lldpd(ns: str, ifname: str, sock: str) -> subprocess.Popen:
    """lldpd in the foreground in `ns`, on `ifname` only; `ip netns exec` execs it, so the
    Popen pid is lldpd's monitor process and terminating it stops lldpd."""
    for tool in ("lldpd", "lldpcli"):
        assert shutil.which(tool), f"{tool} missing: apt-get install lldpd (scripts/apt-test.txt)"
    return subprocess.Popen(["ip", "netns", "exec", ns, "lldpd", "-d", "-u", sock, "-p", sock + ".pid", "-I", ifname],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.fixture
def lldpd_pair(veth_pair, lldp_dir):
    """lldpd in A and in B; returns once A lists B as its neighbour."""
    d = lldp_dir
    procs: list[subprocess.Popen] = []
    tag = veth_pair.a.split("-")[1]
    pair = LldpPair(veth_pair, f"{d}/a.sock", f"{d}/b.sock", f"uplink-peer-{tag}", f"to host A {tag}")
    try:
        for ns, ifname, sock in ((veth_pair.a, veth_pair.a_if, pair.a_sock), (veth_pair.b, veth_pair.b_if, pair.b_sock)):
            procs.append(start_lldpd(ns, ifname, sock))
        wait_for(lambda: os.path.exists(pair.a_sock) and os.path.exists(pair.b_sock), 10, "lldpd sockets")
        wait_for(lambda: answers(pair.a_sock) and answers(pair.b_sock), 10, "lldpd answering")
        pair.cli(pair.b_sock, "configure", "system", "hostname", pair.peer_name)
        pair.cli(pair.b_sock, "configure", "lldp", "portidsubtype", "ifname")
        pair.cli(pair.b_sock, "configure", "ports", veth_pair.b_if, "lldp", "portdescription", pair.peer_port_descr)
        pair.cli(pair.b_sock, "update")
        pair.cli(pair.a_sock, "update")
        wait_for(lambda: pair.peer_name in pair.cli(pair.a_sock, "-f", "json0", "show", "neighbors")
              and pair.peer_port_descr in pair.cli(pair.a_sock, "-f", "json0", "show", "neighbors"),
              15, "A hearing B's LLDP frames")
        yield pair
    finally:
        stop(procs)


def answers(sock: str) -> bool:
    r = subprocess.run(["lldpcli", "-u", sock, "-f", "json0", "show", "chassis"], capture_output=True, timeout=10)
    return r.returncode == 0 and b"chassis" in r.stdout


