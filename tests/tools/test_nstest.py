"""nsTest churn against the real kernel: bounded runs, traffic/veth, cleanup on SIGTERM."""
import json
import os
import signal
import subprocess
import time
import uuid

from .conftest import needs_root, start_tool, tool

pytestmark = needs_root


def _mine(prefix):
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix + "-"))
    except FileNotFoundError:
        return []


def _veths(prefix_pid_hex=None):
    out = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def test_bounded_churn_with_traffic_and_veth_cleans_up():
    prefix = f"xtn{uuid.uuid4().hex[:6]}"
    before = set(_veths())
    r = tool("nstest", "-initial", "3", "-count", "10", "-sleep", "5ms", "-prefix", prefix,
             "-traffic", "-conns", "2", "-veth", "-events", "-json", timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["created"] == 13 and summary["deleted"] == 13 and summary["cycles"] == 10
    assert summary["errors"] == 0 and summary["live_max"] == 3
    events = [line.split() for line in lines[:-1]]
    assert sum(1 for e in events if e[0] == "add") == 13
    assert sum(1 for e in events if e[0] == "del") == 13
    assert _mine(prefix) == []
    assert set(_veths()) == before


def test_sigterm_cleans_up():
    prefix = f"xtn{uuid.uuid4().hex[:6]}"
    p = start_tool("nstest", "-initial", "4", "-sleep", "50ms", "-prefix", prefix, "-traffic")
    try:
        deadline = time.monotonic() + 20
        while len(_mine(prefix)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_mine(prefix)) >= 4
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for n in _mine(prefix):
            subprocess.run(["ip", "netns", "del", n])
    assert p.returncode == 0, err
    assert "nsTest: done" in out
    assert _mine(prefix) == []


def test_duration_bound():
    prefix = f"xtn{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    r = tool("nstest", "-initial", "1", "-duration", "1s", "-sleep", "100ms", "-prefix", prefix, "-json")
    assert r.returncode == 0, r.stderr
    assert 0.9 < time.monotonic() - t0 < 15
    assert json.loads(r.stdout.strip().splitlines()[-1])["cycles"] >= 3
    assert _mine(prefix) == []


def test_bad_prefix():
    r = tool("nstest", "-prefix", "a/b")
    assert r.returncode == 2 and "invalid -prefix" in r.stderr
