"""/debug/profile: a real py-spy profile of this process, bounded, one at a time, never
blocking the listener, refused to non-loopback peers (checked with a daemon listening on
all addresses of a namespace and a client connecting to a non-loopback address)."""
from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest
from prometheus_client import REGISTRY

from tests.daemon_process import ROOT, free_port
from xtcp2.api import profile
from xtcp2.api.metrics_http import start_metrics_server
from xtcp2.config import Config


@pytest.fixture(scope="module")
def py_spy():
    path = profile.py_spy()
    if path is None:
        from tests.need import missing
        missing("py-spy", "pip install -e '.[test]' (the profile extra)")
    return path


@pytest.fixture
def server(py_spy):
    ms = start_metrics_server(Config(prom_listen="127.0.0.1:0"))
    yield ms
    ms.stop()


def get(port: int, path: str, timeout: float = 90, host: str = "127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def profiles(result: str) -> float:
    return REGISTRY.get_sample_value("xtcp2_profiles_total", {"result": result}) or 0.0


def ops_profile_busy_marker(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(2000))


@pytest.fixture
def busy():
    stop = threading.Event()
    t = threading.Thread(target=ops_profile_busy_marker, args=(stop,), daemon=True)
    t.start()
    yield
    stop.set()
    t.join()


def test_raw_profile_shows_what_this_process_runs(server, busy):
    before = profiles("ok")
    status, headers, body = get(server.port, "/debug/profile?seconds=2&format=raw")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    stacks = body.decode().splitlines()
    # collapsed stacks: "frame;frame;... COUNT", and the busy thread's function among them
    assert all(line.rpartition(" ")[2].isdigit() for line in stacks)
    assert any("ops_profile_busy_marker" in line for line in stacks), body[:2000]
    assert profiles("ok") == before + 1


def test_flamegraph_and_speedscope(server, busy):
    status, headers, body = get(server.port, "/debug/profile?seconds=1")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml" and body.lstrip().startswith(b"<?xml")
    assert b"ops_profile_busy_marker" in body
    status, headers, body = get(server.port, "/debug/profile?seconds=1&format=speedscope&idle=1")
    assert status == 200 and headers["Content-Type"] == "application/json"
    frames = json.loads(body)["shared"]["frames"]
    assert any(f["name"] == "ops_profile_busy_marker" for f in frames)


@pytest.mark.parametrize("query", ["seconds=0", "seconds=61", "seconds=abc", "seconds=1.5", "format=pprof",
                                   "idle=maybe", "secs=5", "seconds=1&seconds"])
def test_bad_parameters_are_400(server, query):
    before = profiles("bad_request")
    status, _, body = get(server.port, f"/debug/profile?{query}")
    assert status == 400, body
    assert len(body.decode().strip().splitlines()) == 1
    assert profiles("bad_request") == before + 1


def test_one_at_a_time_and_the_listener_keeps_serving(server):
    first: list = []
    t = threading.Thread(target=lambda: first.append(get(server.port, "/debug/profile?seconds=3&format=raw")))
    t.start()
    deadline = time.monotonic() + 10
    me = psutil.Process()
    while not any(c.name() == "py-spy" for c in me.children()):   # the first profile is running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, headers, _ = get(server.port, "/debug/profile?seconds=1")
    assert status == 429 and headers["Retry-After"] == "1"
    status, _, body = get(server.port, "/metrics", timeout=5)        # while py-spy samples us
    assert status == 200 and b"xtcp2_profiles_total" in body
    still_running = t.is_alive()
    t.join(30)
    assert still_running and first[0][0] == 200


def test_stopping_the_listener_ends_a_profile(py_spy):
    ms = start_metrics_server(Config(prom_listen="127.0.0.1:0"))
    got: list = []
    t = threading.Thread(target=lambda: got.append(_try_get(ms.port)))
    t.start()
    me = psutil.Process()
    deadline = time.monotonic() + 10
    while not (spies := [c for c in me.children() if c.name() == "py-spy"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    ms.stop()
    stopped_in = time.monotonic() - t0
    gone, alive = psutil.wait_procs(spies, timeout=10)
    t.join(30)
    assert not alive and stopped_in < 10   # not the 60 s the profile asked for


def _try_get(port: int):
    try:
        return get(port, "/debug/profile?seconds=60")[0]
    except OSError as e:
        return e


def test_without_py_spy_the_answer_says_what_to_install(server, monkeypatch):
    # the real py-spy is installed here: its absence is simulated by the lookup finding nothing
    monkeypatch.setattr(profile, "py_spy", lambda: None)
    status, _, body = get(server.port, "/debug/profile?seconds=1")
    assert status == 501 and b"pip install 'xtcp2[profile]'" in body


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.mark.root
def test_non_loopback_peers_are_refused_even_on_an_open_listener(py_spy, tmp_path):
    """Daemon in a namespace listening on 0.0.0.0 with basic auth; a client there connecting
    to the namespace's non-loopback address is refused the profile even with the password,
    the same client on 127.0.0.1 gets it with the password and not without."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from tests.need import module
    bcrypt = module("bcrypt")
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  ops: '{bcrypt.hashpw(b'profile-pass-123', bcrypt.gensalt(4)).decode()}'\n")
    web.chmod(0o600)
    auth = "Basic " + base64.b64encode(b"ops:profile-pass-123").decode()
    ns = f"ops-prof-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", ns)
    proc = None
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", ns, "addr", "add", "10.78.0.1/24", "dev", "v0")
        _ip("-n", ns, "link", "set", "v0", "up")
        port = free_port()
        log = open(tmp_path / "daemon.log", "wb")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "xtcp2", "--mode", "poll",
                                 "--netns", "self", "-dest", "null", "-promListen", f"0.0.0.0:{port}",
                                 "-grpcPort", "0", "-webConfigFile", str(web)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})

        def client(host: str, path: str, authorization: str = "") -> tuple[int, bytes]:
            headers = {"Authorization": authorization} if authorization else {}
            code = (f"import http.client as h; c = h.HTTPConnection({host!r}, {port}, timeout=60); "
                    f"c.request('GET', {path!r}, headers={headers!r}); r = c.getresponse(); "
                    f"import sys; sys.stdout.buffer.write(b'%d\\n' % r.status + r.read()[:300])")
            out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True,
                                 timeout=90)
            status, _, body = out.stdout.partition(b"\n")
            return (int(status), body) if status else (0, out.stderr)

        deadline = time.monotonic() + 60
        while client("10.78.0.1", "/healthz")[0] != 200:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert client("10.78.0.1", "/healthz") == (200, b"ok\n")   # no details to an unauthenticated remote peer
        assert client("127.0.0.1", "/healthz")[1].startswith(b"ok: the collection loop ran")
        assert client("10.78.0.1", "/metrics")[0] == 401
        assert client("10.78.0.1", "/metrics", auth)[0] == 200
        status, body = client("10.78.0.1", "/debug/profile?seconds=1&format=raw", auth)
        assert status == 403 and b"loopback clients only" in body
        assert client("127.0.0.1", "/debug/profile?seconds=1&format=raw")[0] == 401
        # idle=1: an idle daemon has few stacks on CPU; its waiting threads are always there
        status, body = client("127.0.0.1", "/debug/profile?seconds=1&format=raw&idle=1", auth)
        assert status == 200 and b"(xtcp2/" in body, body   # stacks of the daemon itself
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.root
def test_profile_with_only_the_capabilities_of_the_hardened_unit(py_spy, tmp_path):
    """py-spy is the daemon's child with its uid: it needs no capability of its own. The
    daemon here keeps only what deploy/systemd/xtcp2.service grants, minus CAP_SYS_PTRACE,
    with no_new_privs set as the unit does."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv")
    keep = "+net_admin,+sys_admin,+bpf,+perfmon"
    port = free_port()
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(["setpriv", f"--bounding-set=-all,{keep}", f"--inh-caps=-all,{keep}",
                             f"--ambient-caps=-all,{keep}", "--no-new-privs", sys.executable, "-m", "xtcp2",
                             "--mode", "poll", "--netns", "self", "-dest", "null", "-promListen",
                             f"127.0.0.1:{port}", "-grpcPort", "0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
            try:
                if get(port, "/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert "CapEff:\t000000c000201000" in open(f"/proc/{proc.pid}/status").read()   # the four, nothing else
        status, _, body = get(port, "/debug/profile?seconds=1&format=raw&idle=1")
        assert status == 200 and b"(xtcp2/" in body, body[:500]
    finally:
        proc.terminate()
        proc.wait(30)
