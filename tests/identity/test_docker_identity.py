"""Records name their container and process, against a real dockerd and real containers.

Container A listens (busybox `nc -ll -e cat`: each connection is served by a forked
`cat`) in its own namespace (--network none); container B shares A's namespace
(--network container:A) and connects to it. The daemon polls in-process. What every
record must say is taken from independent sources: `ss -tanpe` inside the namespace
(owning pids, comm, cgroup path of each socket inode) and `docker inspect`.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from xtcp2.config import Config
from xtcp2.daemon import Daemon
from xtcp2.identity.cgroup import parse_path

from .conftest import IMAGE
from tests.waiting import wait_for

SERVER = ["/bin/nc", "-ll", "-p", "8080", "-e", "/bin/cat"]
CLIENT = ["sh", "-c", "sleep 100000 | nc 127.0.0.1 8080"]
_USERS = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


def ss_owners(pid: int) -> dict[int, dict]:
    """inode -> {"pids": {pid: comm}, "container": id} from `ss -tanpe` in pid's namespace."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "ss", "-tanpeH"], capture_output=True, text=True,
                         check=True).stdout
    socks = {}
    for line in out.splitlines():
        ino = re.search(r"\bino:(\d+)", line)
        if not ino or ino.group(1) == "0":
            continue
        cg = re.search(r"\bcgroup:(\S+)", line)
        c = parse_path(cg.group(1)) if cg else None
        socks[int(ino.group(1))] = {"pids": {int(p): comm for comm, p in _USERS.findall(line)},
                                    "container": c.id if c else ""}
    return socks


class Capture:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.records = []
        daemon.add_listener(lambda env: self.records.extend(env.message().row))

    def poll(self):
        self.records = []
        self.daemon.poll_once()
        return list(self.records)


def errors_counted() -> float:
    return REGISTRY.get_sample_value("xtcp2_identity_errors_total", {"source": "docker"}) or 0.0


def run_container(d, name: str, *args: str) -> dict:
    d.docker("run", "-d", "--name", name, *args)
    return d.inspect(name)


@pytest.fixture(scope="module")
def pair(dockerd):
    a = run_container(dockerd, "xtcp2-identity-a", "--network", "none", IMAGE, *SERVER)
    b = run_container(dockerd, "xtcp2-identity-b", "--network", f"container:{a['Id']}", IMAGE, *CLIENT)
    pid = a["State"]["Pid"]
    # LISTEN (nc), the connected end (B's nc), the accepted end (A's cat)
    wait_for(lambda: len(ss_owners(pid)) >= 3, what="sockets in the containers")
    yield a, b
    dockerd.docker("rm", "-f", a["Id"], b["Id"], check=False)


@pytest.fixture(scope="module")
def host_sockets():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    c = socket.create_connection(ls.getsockname())
    s, _ = ls.accept()
    yield {os.fstat(x.fileno()).st_ino for x in (ls, c, s)}
    for x in (ls, c, s):
        x.close()


@pytest.fixture(scope="module")
def daemon(dockerd, pair):
    a, _ = pair
    # a generous -timeout: on a loaded host a 1 s read can stop early and drop sockets
    cfg = Config(netns=["self", a["Id"]], dest="null", poll_frequency=10.0, poll_timeout=10.0,
                 resolve_container_id=True, enrich_container_enable=True, docker_socket_path=dockerd.sock,
                 debug_level=0)
    d = Daemon(cfg)
    wait_for(lambda: d.identity.docker.connected, what="the docker API")
    yield d
    d.close()


def check_container_records(recs, info: dict[str, dict], pid_in_ns: int, runtime: str = "docker") -> int:
    """Every record of the namespace says what ss and docker inspect say. Returns how many."""
    owners = ss_owners(pid_in_ns)
    mine = [r for r in recs if r.netns_inode == os.stat(f"/proc/{pid_in_ns}/ns/net").st_ino]
    checked = 0
    for r in mine:
        o = owners.get(r.inet_diag_msg_inode)
        if o is None:
            continue   # a socket that came or went between the poll and ss
        c = info[o["container"]]
        assert (r.container_id, r.container_name, r.container_image, r.container_runtime) == \
            (c["Id"], c["Name"].lstrip("/"), c["Config"]["Image"], runtime), r
        assert r.pid in o["pids"] and r.comm == o["pids"][r.pid], (r, o)
        checked += 1
    return checked


def test_records_name_container_and_process(dockerd, pair, host_sockets, daemon):
    a, b = pair
    cap = Capture(daemon)
    with open("/proc/self/comm") as f:
        comm = f.read().strip()

    def mine_resolved():
        # container sockets resolve at once (their cgroup's few processes are searched);
        # host sockets wait for the walk of all of /proc, which a read budget spreads over
        # polls on a host with many sockets (another test's 100k-socket population)
        recs = cap.poll()
        return recs if all(r.pid for r in recs if r.inet_diag_msg_inode in host_sockets) else None

    recs = wait_for(mine_resolved, timeout=60, what="the owners of this test's host sockets")
    info = {a["Id"]: a, b["Id"]: b}
    # the namespace is named after the container that owns it (A; B only joined it)
    assert {r.netns for r in recs if r.netns_inode == os.stat(f"/proc/{a['State']['Pid']}/ns/net").st_ino} \
        == {a["Id"]}
    assert check_container_records(recs, info, a["State"]["Pid"]) >= 3
    # each container owns its own sockets although they share one namespace
    ids = {r.container_id for r in recs if r.netns == a["Id"] and r.inet_diag_msg_inode}
    assert ids == {a["Id"], b["Id"]}
    host = [r for r in recs if r.netns == "default"]
    assert host and all(not (r.container_id or r.container_name or r.container_image or r.container_runtime)
                        for r in host)
    me = [r for r in host if r.inet_diag_msg_inode in host_sockets]
    assert len(me) == 3 and all((r.pid, r.comm) == (os.getpid(), comm) for r in me)


def test_tcp_metrics_are_labelled_by_container(dockerd, pair, daemon):
    """xtcp2_tcp_sockets counts each container's own sockets, although A and B share
    one namespace: the metrics see the identity join's columns."""
    a, b = pair
    daemon.poll_once()
    owners = ss_owners(a["State"]["Pid"])
    states = {"ESTAB": "established", "LISTEN": "listen"}
    want: dict[tuple[str, str], int] = {}
    out = subprocess.run(["nsenter", "-t", str(a["State"]["Pid"]), "-n", "ss", "-tanpeH"], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        ino = re.search(r"\bino:(\d+)", line)
        o = owners.get(int(ino.group(1))) if ino else None
        if o and line.split()[0] in states:
            name = {a["Id"]: "xtcp2-identity-a", b["Id"]: "xtcp2-identity-b"}[o["container"]]
            key = (name, states[line.split()[0]])
            want[key] = want.get(key, 0) + 1
    assert want.get(("xtcp2-identity-a", "listen")) == 1 and want.get(("xtcp2-identity-b", "established"))
    for (name, state), count in want.items():
        got = REGISTRY.get_sample_value("xtcp2_tcp_sockets", {"netns": a["Id"], "container": name, "state": state})
        assert got == count, (name, state, got, count)
    # nothing of theirs is left without a label
    assert not REGISTRY.get_sample_value("xtcp2_tcp_sockets", {"netns": a["Id"], "container": "",
                                                               "state": "established"})


def test_ns_tool_lists_containers_and_processes(dockerd, pair):
    a, b = pair
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.ns", "--json", "-dockerSocket", dockerd.sock],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ino = os.stat(f"/proc/{a['State']['Pid']}/ns/net").st_ino
    entry = [n for n in json.loads(r.stdout)["namespaces"] if n["inode"] == ino]
    assert len(entry) == 1 and entry[0]["name"] == a["Id"]
    assert {(c["id"], c["name"], c["image"], c["runtime"]) for c in entry[0]["containers"]} == {
        (a["Id"], "xtcp2-identity-a", IMAGE, "docker"), (b["Id"], "xtcp2-identity-b", IMAGE, "docker")}
    assert {"nc", "cat", "sh", "sleep"} <= set(entry[0]["processes"])
    table = subprocess.run([sys.executable, "-m", "xtcp2.tools.ns", "-dockerSocket", dockerd.sock],
                           capture_output=True, text=True, timeout=120).stdout
    row = [line for line in table.splitlines() if line.startswith(str(ino))]
    assert row and "xtcp2-identity-a(" + IMAGE + ")" in row[0] and "xtcp2-identity-b(" in row[0]


def test_container_started_later_is_named_on_next_poll(dockerd, pair, daemon):
    a, _ = pair
    cap = Capture(daemon)
    cap.poll()
    c = run_container(dockerd, "xtcp2-identity-c", "--network", f"container:{a['Id']}", IMAGE, *CLIENT)
    try:
        pid = c["State"]["Pid"]
        wait_for(lambda: any(c["Id"] == o["container"] for o in ss_owners(pid).values()), what="C's socket")
        recs = [r for r in cap.poll() if r.container_id == c["Id"]]
        assert recs and all(r.container_name == "xtcp2-identity-c" and r.container_image == IMAGE and
                            r.comm == "nc" for r in recs), recs
    finally:
        dockerd.docker("rm", "-f", c["Id"])
    # a removed container leaves the cache (destroy event); its connection may linger in
    # TIME_WAIT, still its own, but no process holds a socket of it any more
    wait_for(lambda: c["Id"] not in daemon.identity.docker.cache, timeout=15, what="cache entry dropped")
    left = [r for r in cap.poll() if r.container_id == c["Id"]]
    assert all(r.inet_diag_msg_state == 6 and not r.pid and not r.comm for r in left), left


def test_dockerd_down_records_flow_errors_counted_names_return(dockerd, pair, daemon):
    a, b = pair
    cap = Capture(daemon)
    before = errors_counted()
    dockerd.stop()
    try:
        wait_for(lambda: errors_counted() > before, timeout=15, what="docker errors counted")
        recs = cap.poll()
        # records keep flowing, with container ids from the cgroup and names from the cache
        assert check_container_records(recs, {a["Id"]: a, b["Id"]: b}, a["State"]["Pid"]) >= 3
        assert not daemon.identity.docker.connected
    finally:
        dockerd.start()
    wait_for(lambda: daemon.identity.docker.connected, timeout=30, what="reconnect to dockerd")
    d = run_container(dockerd, "xtcp2-identity-d", "--network", f"container:{a['Id']}", IMAGE, *CLIENT)
    try:
        wait_for(lambda: any(d["Id"] == o["container"] for o in ss_owners(d["State"]["Pid"]).values()),
                 what="D's socket")
        recs = cap.poll()
        assert check_container_records(recs, {a["Id"]: a, b["Id"]: b, d["Id"]: d}, a["State"]["Pid"]) >= 4
        assert any(r.container_name == "xtcp2-identity-d" for r in recs)
    finally:
        dockerd.docker("rm", "-f", d["Id"], check=False)


def test_bpf_mode_names_a_connection_at_its_open_event(dockerd, pair):
    """In bpf mode the OPEN record of a new container's first connection already names it."""
    import threading

    from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
    a, _ = pair
    cfg = Config(mode="bpf", netns=[a["Id"]], dest="null", poll_frequency=10.0, poll_timeout=5.0,
                 resolve_container_id=True, enrich_container_enable=True, docker_socket_path=dockerd.sock,
                 debug_level=0)
    d = Daemon(cfg, use_bpf=True)
    recs = []
    d.add_listener(lambda env: recs.extend(env.message().row))
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    c = None
    try:
        assert d.mode.ready.wait(60), "bpf start-up resync did not finish"
        wait_for(lambda: d.identity.docker.connected, what="the docker API")
        # the client connects a second after start: the start event has named it by then
        c = run_container(dockerd, "xtcp2-identity-e", "--network", f"container:{a['Id']}", IMAGE,
                          "sh", "-c", "sleep 1; sleep 100000 | nc 127.0.0.1 8080")
        opened = wait_for(lambda: [r for r in list(recs) if r.trigger == pb.XtcpFlatRecord.TRIGGER_OPEN
                                   and r.container_id == c["Id"]], timeout=30, what="OPEN record of E")
        owners = ss_owners(c["State"]["Pid"])
        r = opened[0]
        assert (r.container_name, r.container_image, r.container_runtime, r.comm) == \
            ("xtcp2-identity-e", IMAGE, "docker", "nc"), r
        assert r.pid in owners[r.inet_diag_msg_inode]["pids"]
    finally:
        d.stop()
        t.join(30)
        d.close()
        if c is not None:
            dockerd.docker("rm", "-f", c["Id"], check=False)
