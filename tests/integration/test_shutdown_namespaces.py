"""Stopping with many namespaces: SIGTERM must not wait for a pass over all of them.

A daemon with ~300 namespaces on a loaded host took over 30 s to exit: the signal
arrived during a resync, and the resync (every namespace read, each record joined to
its process by a /proc walk) ran to its end before the loop saw the stop. Now a stop
ends the pass at the namespace in progress (between chunks) and cuts the /proc walk.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.daemon_process import DaemonProcess

pytestmark = pytest.mark.root

HERE = os.path.dirname(__file__)
COUNT = 100
# exit after SIGTERM, with the destination `null`: a hang, not a speed, is what fails this
EXIT_BOUND = 10.0


@pytest.fixture(scope="module")
def namespaces():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = f"xt2sd-{uuid.uuid4().hex[:6]}"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "many_namespaces.py"), prefix, str(COUNT), "4"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("ready"), "many_namespaces.py failed"
    yield [f"{prefix}-{i}" for i in range(1, COUNT + 1)]
    p.stdin.close()
    p.wait(60)


@pytest.mark.parametrize("collector", ["iter", "netlink"])
def test_stop_ends_a_pass_at_the_namespace_in_progress(namespaces, collector):
    from xtcp2.config import Config
    from xtcp2.daemon import Daemon
    from xtcp2.ebpf import select_mode

    if collector == "iter" and not select_mode("auto")[0]:
        pytest.skip("BPF iterator cannot load here")
    d = Daemon(Config(netns=namespaces, netlinkers=1, dest="null", collector=collector, poll_timeout=60,
                      poll_frequency=60).validate())
    seen: list[str] = []

    def stop_at_first_batch(cols, consts) -> None:
        seen.append(consts["netns"])
        if len(seen) == 1:
            d.stop()   # what SIGTERM does, from inside the pass

    d.sink.add_join(stop_at_first_batch)
    try:
        d.reconcile()
        assert len(d.table.namespaces()) == COUNT
        stats = d.poll_once()
    finally:
        d.close()
    read = [ns for ns, sockets in stats.per_ns.items() if sockets]
    # one netlinker: the namespace it was in when the stop came, and no other
    assert len(read) == 1 and set(seen) == set(read), (read, seen)


def _daemon(names: list[str]) -> DaemonProcess:
    only = [a for n in names for a in ("--netns", n)]
    return DaemonProcess("--mode", "bpf", "-dest", "null", "-frequency", "2s", "-resync", "2s", *only)


def _wait_log(d: DaemonProcess, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert d.proc.poll() is None, d.log_text()[-3000:]
        if text in d.log_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged: {d.log_text()[-3000:]}")


def _resyncs(d: DaemonProcess) -> float:
    try:
        return sum(v for (name, _), v in d.scrape().items() if name == "xtcp2_bpf_resyncs_total")
    except OSError:   # not listening yet
        return 0.0


@pytest.mark.parametrize("when", ["attaching", "running"])
def test_bpf_daemon_with_many_namespaces_exits_promptly(namespaces, when):
    from xtcp2.ebpf import select_mode

    ok, why = select_mode("auto")
    if not ok:
        pytest.skip(f"bpf mode cannot run here: {why}")
    d = _daemon(namespaces)
    try:
        if when == "attaching":
            _wait_log(d, "bpf programs attached")   # the start-up resync of every namespace follows
        else:   # past the start-up resync and into periodic ones (timer, or drops on a busy host)
            deadline = time.monotonic() + 60
            while _resyncs(d) < 3:
                assert d.proc.poll() is None and time.monotonic() < deadline, d.log_text()[-3000:]
                time.sleep(0.2)
        rc, took = d.stop(timeout=120)
        log = d.log_text()
    finally:
        d.close()
    assert rc == 0, log[-3000:]
    assert took < EXIT_BOUND, f"exit took {took:.1f}s after SIGTERM; log: {log[-3000:]}"
    assert f"closed the sockets of {COUNT} namespace(s)" in log


def test_stop_cuts_a_proc_walk_for_socket_owners():
    import socket

    from xtcp2.identity.proc import SocketOwners

    pairs = [socket.socketpair() for _ in range(50)]
    try:
        inodes = [os.fstat(s.fileno()).st_ino for p in pairs for s in p]
        found = SocketOwners().find_in([os.getpid()], inodes)
        assert set(found) == set(inodes) and set(found.values()) == {os.getpid()}
        stopped = SocketOwners()
        stopped.stop()
        assert stopped.find_in([os.getpid()], inodes) == {}
        assert stopped.find(inodes) == {}
    finally:
        for a, b in pairs:
            a.close()
            b.close()
