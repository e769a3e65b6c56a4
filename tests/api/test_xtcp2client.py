"""xtcp2client against the real daemon, run as a separate process like an operator would."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root


def client(rd_or_port, *argv: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    port = rd_or_port if isinstance(rd_or_port, int) else rd_or_port.server.port
    return subprocess.run([sys.executable, "-m", "xtcp2.tools.xtcp2client", "-port", str(port), *argv],
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def test_get_set_and_polls(start_daemon):
    rd = start_daemon(poll_frequency=600.0, poll_timeout=0.5)
    rd.wait_loops(1)
    got = client(rd, "get")
    assert got.returncode == 0, got.stderr
    cfg = json.loads(got.stdout)
    assert cfg["poll_frequency"] == "600s" and cfg["dest"] == "null"

    res = client(rd, "set", "tag=INC-7", "poll_frequency=20s", "enabled_deserializers=info,cong")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tag"] == "INC-7"
    assert rd.daemon.config.tag == "INC-7" and rd.daemon.config.poll_frequency == 20.0
    assert rd.daemon.config.enabled_deserializers == ("info", "cong")

    # a whole config from `get`, edited, through stdin
    cfg = json.loads(client(rd, "get").stdout)
    cfg["label"] = "from-file"
    res = client(rd, "set", "-file", "-", stdin=json.dumps(cfg))
    assert res.returncode == 0, res.stderr
    assert rd.daemon.config.label == "from-file"

    before = rd.daemon.config.as_dict()
    bad = client(rd, "set", "poll_frequency=0s")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "xtcp2client: refused: poll_frequency: must be >= 0.01 and <= 604800 s, not 0"
    bad = client(rd, "set", "netlinkers=-3")
    assert bad.returncode == 1 and bad.stderr.startswith("xtcp2client: netlinkers:")
    bad = client(rd, "set", "nosuchfield=1")
    assert bad.returncode == 1 and "FIELD=VALUE" in bad.stderr
    assert rd.daemon.config.as_dict() == before

    res = client(rd, "set-poll-frequency", "-frequency", "30s", "-timeout", "2s")
    assert res.returncode == 0, res.stderr
    assert rd.daemon.config.poll_frequency == 30.0

    n = rd.daemon.loops
    assert client(rd, "trigger-poll").returncode == 0
    assert rd.wait_loops(n + 1, timeout=5) == n + 1
    res = client(rd, "poll-burst", "-count", "2", "-interval", "3s")
    assert res.returncode == 0 and "2 polls 3 s apart" in res.stdout
    assert rd.wait_loops(n + 3, timeout=8) == n + 3

    health = client(rd, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")


def test_stream_table_and_json(start_daemon, socket_netns):
    rd = start_daemon(poll_frequency=0.5, poll_timeout=0.4)
    res = client(rd, "-count", "20", "-state", "established")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["NETNS", "STATE", "RECV-Q", "SEND-Q"]
    assert len(lines) == 21
    assert all(line.split()[1] == "ESTAB" and "127.0.0.1:" in line for line in lines[1:])
    assert any(":5000" in line for line in lines[1:])

    res = client(rd, "-json", "-count", "5", "-filterPort", "5000", "-netns", socket_netns["name"])
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(recs) == 5
    assert all(r["netns"] == socket_netns["name"] for r in recs)
    assert all(5000 in (r.get("inetDiagMsgSocketSourcePort"), r.get("inetDiagMsgSocketDestinationPort"))
               for r in recs)


def test_poll_mode(start_daemon, socket_netns):
    rd = start_daemon(poll_frequency=600.0)
    first = rd.wait_loops(1)
    res = client(rd, "-poll", "-pollFrequency", "1s", "-json", "-count", str(2 * socket_netns["sockets"]))
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2 * socket_netns["sockets"]
    assert rd.daemon.loops >= first + 2


def test_unreachable_daemon_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = client(port, "get")
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"xtcp2client: cannot reach xtcp2 at 127.0.0.1:{port}")
