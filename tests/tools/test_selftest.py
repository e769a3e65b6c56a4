"""xtcp2-selftest: sentinel contract, independence of checks, and a run against a real daemon."""
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from xtcp2.tools.selftest import CHECK_NAMES

from .conftest import needs_root, tool

pytestmark = needs_root
SENTINEL = re.compile(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)$")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def parse(stdout):
    results = {}
    reasons = {}
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        m = SENTINEL.match(line)
        if m:
            assert m.group(1) not in results, f"duplicate sentinel {line}"
            results[m.group(1)] = m.group(2)
            if m.group(1) != "OVERALL":
                reasons[m.group(1)] = lines[i - 1]
    return results, reasons


def test_without_daemon_every_check_reports_and_later_checks_still_run():
    r = tool("selftest", "-pid", str(_dead_pid()), "-metrics", f"http://127.0.0.1:{_free_port()}/metrics",
             "-grpcPort", str(_free_port()), "-wait", "2s", timeout=240)
    results, reasons = parse(r.stdout)
    assert list(results) == list(CHECK_NAMES) + ["OVERALL"]
    assert r.returncode == 1 and results["OVERALL"] == "FAIL"
    for name in ("SYSTEMD", "METRICS", "NETLINK", "GRPC_ROUNDTRIP", "NS_LIFECYCLE", "NS_TRAFFIC", "NS_DOCKER"):
        assert results[name] == "FAIL", name
        assert reasons[name].startswith(f"selftest: {name} FAILED"), reasons[name]
    # checks that need no daemon pass even after earlier ones failed
    assert results["NS_INSPECT"] == "PASS", reasons["NS_INSPECT"]
    assert results["NSTEST"] == "PASS", reasons["NSTEST"]
    assert "Traceback" not in r.stdout + r.stderr
    # NS_DOCKER must leave nothing mounted behind
    assert not any(" /run/docker/netns/xtcp2st" in line for line in open("/proc/self/mountinfo"))


def test_metrics_without_xtcp2_series_fails(tmp_path):
    # a real HTTP server that serves Prometheus text without any xtcp2_ series
    port = _free_port()
    srv = subprocess.Popen([sys.executable, "-c", (
        "import prometheus_client, time\n"
        f"prometheus_client.start_http_server({port}, addr='127.0.0.1')\n"
        "time.sleep(60)\n")])
    try:
        time.sleep(1.0)
        r = tool("selftest", "-only", "metrics", "-metrics", f"http://127.0.0.1:{port}/metrics")
    finally:
        srv.kill()
        srv.wait()
    results, reasons = parse(r.stdout)
    assert results == {"METRICS": "FAIL", "OVERALL": "FAIL"}
    assert "no xtcp2_* samples" in reasons["METRICS"]


def test_only_rejects_unknown_check():
    r = tool("selftest", "-only", "bogus")
    assert r.returncode == 2 and "unknown check" in r.stderr


def test_bad_metrics_url():
    r = tool("selftest", "-metrics", "127.0.0.1:9088")
    assert r.returncode == 2 and "http" in r.stderr
