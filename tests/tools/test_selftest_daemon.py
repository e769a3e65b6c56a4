"""The self-test against a real daemon on the host: all ten checks must pass."""
import re

import pytest

from xtcp2.tools.selftest import CHECK_NAMES

from .conftest import needs_root, tool

pytestmark = [needs_root, pytest.mark.slow]


def test_selftest_against_running_daemon(daemon):
    r = tool("selftest", "-pid", str(daemon.proc.pid), "-metrics", daemon.url,
             "-grpcPort", str(daemon.grpc_port), "-wait", "30s", timeout=400)
    print(r.stdout)
    results = dict(re.findall(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)$", r.stdout, re.M))
    assert list(results) == list(CHECK_NAMES) + ["OVERALL"]
    assert daemon.proc.poll() is None, daemon.log_text()[-3000:]
    failed = [n for n in CHECK_NAMES if results[n] != "PASS"]
    assert not failed, r.stdout + daemon.log_text()[-3000:]
    assert results["OVERALL"] == "PASS" and r.returncode == 0


@pytest.mark.parametrize("daemon_args", [
    # bpf mode without periodic refresh: after a socket opens, nothing re-reports it for the
    # 10 s until the next resync. A check that waits for re-reports (as NS_TRAFFIC once did:
    # subscribe after the sockets exist, stop at 202 records) cannot pass within -wait 8s.
    ("--mode", "bpf", "-bpfRefresh", "0"),
    # poll mode every 3 s: the sockets are reported by the next poll, not the one after.
    ("--mode", "poll", "-frequency", "3s", "-timeout", "1s"),
], ids=["bpf_no_refresh", "poll_3s"])
def test_ns_traffic_holds_in_a_loop(tmp_path, daemon_args):
    """NS_TRAFFIC (after NS_LIFECYCLE, which frees a namespace inode for it to reuse) passes
    every time, whatever the daemon's re-report schedule: it waits for its own sockets."""
    from .conftest import DaemonUnderTest
    d = DaemonUnderTest(tmp_path, *daemon_args)
    try:
        for i in range(5):
            r = tool("selftest", "-pid", str(d.proc.pid), "-metrics", d.url, "-grpcPort", str(d.grpc_port),
                     "-wait", "8s", "-only", "NS_LIFECYCLE,NS_TRAFFIC", timeout=120)
            results = dict(re.findall(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)$", r.stdout, re.M))
            assert results.get("NS_TRAFFIC") == "PASS", f"run {i}:\n{r.stdout}{r.stderr}{d.log_text()[-3000:]}"
            assert d.proc.poll() is None
    finally:
        d.stop()
