"""The self-test against a real daemon on the host: all ten checks must pass."""
import re

import pytest

from xtcp2.tools.dockerload import IMAGE, api_ping
from xtcp2.tools.selftest import CHECK_NAMES

from ..servers.dockerd import start_dockerd

from .conftest import needs_root, tool

pytestmark = [needs_root, pytest.mark.slow]


def test_selftest_against_running_daemon(daemon):
    r = tool("selftest", "-pid", str(daemon.proc.pid), "-metrics", daemon.url,
             "-grpcPort", str(daemon.grpc_port), "-wait", "30s", timeout=400)
    print(r.stdout)
    results = dict(re.findall(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)$", r.stdout, re.M))
    # no dockerd on the default socket here: NS_DOCKER says it used the bind-mount fallback
    if not api_ping("/run/docker.sock"):
        assert re.search(r"^selftest: NS_DOCKER ok .*bind-mount fallback \(no dockerd at /run/docker.sock",
                         r.stdout, re.M), r.stdout
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


@pytest.fixture(scope="module")
def dockerd():
    d = start_dockerd("xtcp2-st-", tools=("busybox",))
    try:
        yield d
    finally:
        d.destroy()


@pytest.mark.parametrize("identity, how", [
    (("-resolveContainerId", "-enrichContainer"), "by containerId + containerName"),
    (("-resolveContainerId=false", "-enrichContainer=false"), "records carry no container fields"),
], ids=["enriched", "plain"])
def test_ns_docker_with_real_containers(tmp_path, dockerd, identity, how):
    """Where a dockerd answers, NS_DOCKER runs real containers (one joining the other's
    namespace); the records name each socket's own container when the daemon resolves them."""
    from .conftest import DaemonUnderTest
    d = DaemonUnderTest(tmp_path, "-dockerSocket", dockerd.sock, *identity)
    try:
        r = tool("selftest", "-pid", str(d.proc.pid), "-metrics", d.url, "-grpcPort", str(d.grpc_port),
                 "-wait", "60s", "-only", "NS_DOCKER", "-dockerSocket", dockerd.sock, timeout=400)
        print(r.stdout, r.stderr)
        assert "XTCP2_SELF_TEST_NS_DOCKER_PASS" in r.stdout, r.stdout + r.stderr + d.log_text()[-3000:]
        line = [x for x in r.stdout.splitlines() if x.startswith("selftest: NS_DOCKER ok")][0]
        assert f"real docker containers via {dockerd.sock}: xtcp2st-" in line and how in line, line
        assert "listener and accepted socket -> a, client -> b" in line
        # it leaves nothing behind: no container, not the image it imported
        assert dockerd.docker("ps", "-aq") == ""
        assert IMAGE not in dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    finally:
        d.stop()
