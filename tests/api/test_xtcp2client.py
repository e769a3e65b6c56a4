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


def test_json_dialect_and_human_formats(start_daemon, socket_netns):
    """-json is the daemon's jsonl dialect; csv/humanize print state names, text addresses, RTT in ms."""
    import csv
    import io

    rd = start_daemon(poll_frequency=0.5, poll_timeout=0.4)
    res = client(rd, "-json", "-count", "10", "-state", "established")
    assert res.returncode == 0, res.stderr
    for line in res.stdout.splitlines():
        r = json.loads(line)
        assert r["inetDiagMsgSocketSource"] == r["inetDiagMsgSocketDestination"] == "127.0.0.1"  # not base64
        assert r["inetDiagMsgState"] == 1 and r["inetDiagMsgStateName"] == "ESTABLISHED"
        assert isinstance(r["inetDiagMsgSocketCookie"], int)
    res = client(rd, "-format", "csv", "-columns", "netns,inetDiagMsgState,inetDiagMsgSocketSource,tcpInfoRtt",
                 "-count", "10", "-state", "established")
    assert res.returncode == 0, res.stderr
    table = list(csv.reader(io.StringIO(res.stdout)))
    assert table[0] == ["netns", "inetDiagMsgState", "inetDiagMsgSocketSource", "tcpInfoRttMs"]
    assert len(table) == 11
    for netns, state, src, rtt in table[1:]:
        assert (netns, state, src) == (socket_netns["name"], "ESTABLISHED", "127.0.0.1")
        assert 0 < float(rtt) < 100  # milliseconds on loopback
    res = client(rd, "-format", "humanize", "-count", "3", "-state", "listen")
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["inetDiagMsgState"] for x in res.stdout.splitlines()] == ["LISTEN"] * 3
    bad = client(rd, "-format", "csv", "-columns", "nope")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "unknown column 'nope'" in bad.stderr


def test_filtered_stream_drops_nothing_it_did_not_ask_for(start_daemon, socket_netns):
    """A client whose filter matches one listener, on a queue far smaller than a poll:
    unfiltered it would overflow at once; filtered first, nothing is dropped."""
    import grpc

    from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
    from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2_grpc as pb_grpc

    rd = start_daemon(server_kw={"queue_rows": 20}, poll_frequency=0.25, poll_timeout=0.2)
    with grpc.insecure_channel(rd.target) as ch:
        call = pb_grpc.XTCPFlatRecordServiceStub(ch).FlatRecords(
            pb.FlatRecordsRequest(), timeout=30, metadata=(("xtcp2-filter", "state=listen"),))
        got = [next(call).xtcp_flat_record for _ in range(3)]  # three polls' worth, read slowly
        assert all(r.inet_diag_msg_state == 10 for r in got)
        loops = rd.daemon.loops
        rd.wait_loops(loops + 4)
        subs = rd.server.subscribers()
        assert len(subs) == 1 and subs[0].dropped_records == 0
        call.cancel()


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
