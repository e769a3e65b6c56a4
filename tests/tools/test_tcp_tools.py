"""tcp_server / tcp_client inside a real namespace, long-lived and churn modes."""
import json
import time

from .conftest import needs_root, start_tool, tool

pytestmark = needs_root


def _wait_listening(ns, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = json.loads(tool("ns", "--json").stdout)
        for entry in out["namespaces"]:
            if any(x["path"].endswith("/" + ns) for x in entry["names"]):
                if entry["sockets"].get("inet", {}).get("LISTEN", 0) >= n:
                    return entry
        time.sleep(0.2)
    raise AssertionError(f"{n} listeners never appeared in {ns}")


def test_long_lived_population_visible_to_ns(netns_name):
    srv = start_tool("tcp_server", "-count", "6", "-duration", "20", netns=netns_name)
    try:
        _wait_listening(netns_name, 6)
        cli = start_tool("tcp_client", "-count", "6", "-sleep", "100ms", "-pads", "512", "-duration", "3",
                         netns=netns_name)
        try:
            # while the client runs: 6 listeners + 6 client + 6 server ends ESTABLISHED
            deadline = time.monotonic() + 10
            est = 0
            while time.monotonic() < deadline and est < 12:
                entry = _wait_listening(netns_name, 6)
                est = entry["sockets"]["inet"].get("ESTABLISHED", 0)
                time.sleep(0.2)
            assert est == 12
        finally:
            out, err = cli.communicate(timeout=15)
        assert cli.returncode == 0, err
        stats = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split()[2:])
        assert int(stats["connects"]) == 6
        assert int(stats["writes"]) >= 6 * 10
        assert int(stats["bytes_echoed"]) == int(stats["bytes_sent"]) > 0
    finally:
        srv.terminate()
        srv.communicate(timeout=10)
    assert srv.returncode == 0


def test_churn_mode(netns_name):
    srv = start_tool("tcp_server", "-count", "3", "-duration", "20", "-quiet", netns=netns_name)
    try:
        _wait_listening(netns_name, 3)
        r = tool("tcp_client", "-count", "3", "-churn", "-sleep", "20ms", "-duration", "1", netns=netns_name)
        assert r.returncode == 0, r.stderr
        stats = dict(kv.split("=") for kv in r.stdout.strip().splitlines()[-1].split()[2:])
        assert int(stats["connects"]) >= 9  # several rounds of 3 short connections
        assert int(stats["bytes_echoed"]) == int(stats["bytes_sent"])
        entry = _wait_listening(netns_name, 3)
        assert entry["sockets"]["inet"].get("TIME_WAIT", 0) >= 3  # closed connections linger
    finally:
        srv.terminate()
        srv.communicate(timeout=10)


def test_client_reports_unreachable_server(netns_name):
    r = tool("tcp_client", "-count", "2", "-duration", "1", "-timeout", "1s", netns=netns_name)
    assert r.returncode == 1
    assert "no connection" in r.stderr and "Traceback" not in r.stderr


def test_server_port_in_use(netns_name):
    srv = start_tool("tcp_server", "-count", "1", "-duration", "20", netns=netns_name)
    try:
        _wait_listening(netns_name, 1)
        r = tool("tcp_server", "-count", "1", "-duration", "1", netns=netns_name)
        assert r.returncode == 1
        assert "cannot listen" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    finally:
        srv.terminate()
        srv.communicate(timeout=10)
