"""/healthz, /readyz and `xtcp2 -healthcheck` against a real daemon: a stuck collection
loop (the XTCP2_TEST_STALL_FILE hook blocks it for real), then its recovery; a
destination that cannot connect, then can."""
from __future__ import annotations

import os
import socket
import time

import pytest

from .daemon import HealthDaemon

pytestmark = pytest.mark.root


@pytest.fixture
def daemon_factory(tmp_path):
    made = []

    def make(*flags, env=None):
        d = HealthDaemon(tmp_path, *flags, env=env)
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()


POLL = ("--mode", "poll", "--netns", "self", "-frequency", "200ms", "-timeout", "100ms", "-livenessTimeout", "1s")


def test_stuck_loop_fails_healthz_then_recovers(daemon_factory):
    d = daemon_factory(*POLL, "-dest", "null")
    assert "ready" in d.wait_for("/readyz", 200)
    assert d.get("/healthz")[0] == 200
    ok = d.healthcheck()
    assert ok.returncode == 0, ok.stderr
    assert "/healthz 200" in ok.stdout and "/readyz 200" in ok.stdout

    d.stall.touch()  # the loop blocks in its next stop check
    body = d.wait_for("/healthz", 503, timeout=10)
    assert body.startswith("stuck: the collection loop last ran")
    assert d.get("/readyz")[0] == 503
    bad = d.healthcheck()
    assert bad.returncode == 1
    assert "/healthz 503 stuck" in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert d.get("/metrics")[0] == 200   # the listener itself is not stuck

    d.stall.unlink()
    d.wait_for("/healthz", 200, timeout=10)
    d.wait_for("/readyz", 200, timeout=10)
    assert d.healthcheck().returncode == 0
    assert d.stop() == 0


def test_readyz_waits_for_the_destination(daemon_factory, tmp_path):
    path = tmp_path / "dest.sock"
    d = daemon_factory(*POLL, "-dest", f"unix:{path}?backoffMax=0.5")
    body = d.wait_for("/readyz", 503)
    deadline = time.monotonic() + 15
    while "not connected" not in body and time.monotonic() < deadline:
        time.sleep(0.1)
        body = d.get("/readyz")[1]
    assert body.startswith(f"destination unix:{path} not connected"), body
    assert d.get("/healthz")[0] == 200   # alive, just not ready
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(path))
        srv.listen(4)
        srv.settimeout(15)
        conn, _ = srv.accept()
        with conn:
            d.wait_for("/readyz", 200, timeout=15)
            assert d.stop() == 0


def test_bpf_mode_is_ready_once_attached(daemon_factory):
    if os.geteuid() != 0:
        pytest.skip("bpf mode needs root")
    d = daemon_factory("--mode", "bpf", "-frequency", "1s", "-dest", "null", "-livenessTimeout", "2s")
    d.wait_for("/readyz", 200, timeout=60)
    assert d.get("/healthz")[1].startswith("ok: the collection loop ran")
    assert d.stop() == 0


def test_healthcheck_without_a_daemon_fails_in_one_line(tmp_path):
    d = HealthDaemon.__new__(HealthDaemon)
    from tests.daemon_process import free_port
    d.listen = f"127.0.0.1:{free_port()}"
    out = d.healthcheck()
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1 and "unreachable" in out.stderr
