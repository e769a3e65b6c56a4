"""ConfigService and XTCPFlatRecordService driven by a client built from upstream's .proto.

The daemon is the real one, polling a namespace with 101 TCP sockets; the client is a
separate process whose stubs protoc generated from upstream xtcp2's own schema.
"""
from __future__ import annotations

import time

import grpc
import pytest

from .. import need

pytestmark = pytest.mark.root


def unary(run_upstream, rd, method: str, body: dict) -> dict:
    return run_upstream(rd.target, [["unary", method, body]])[0]


def test_get_returns_running_config(start_daemon, run_upstream):
    rd = start_daemon(marshal_to="protoJson", tag="t1", poll_frequency=30.0)
    res = unary(run_upstream, rd, "Get", {})
    assert res["ok"], res
    cfg = res["response"]["config"]
    assert cfg["poll_frequency"] == "30s"
    assert cfg["poll_timeout"] == "0.500s"
    assert cfg["marshal_to"] == "protoJson"
    assert cfg["tag"] == "t1"
    assert cfg["dest"] == "null"
    assert cfg["daemon_version"]
    enabled = cfg["enabled_deserializers"]["enabled"]
    assert enabled["info"] is True and enabled.get("meminfo", False) is False


def test_set_applies_without_restart(start_daemon, run_upstream):
    rd = start_daemon(poll_frequency=60.0)
    rd.wait_loops(1)
    cfg = unary(run_upstream, rd, "Get", {})["response"]["config"]
    cfg.update(poll_frequency="0.250s", poll_timeout="0.200s", marshal_to="msgpack",
               envelope_flush_threshold_rows=77, tag="INC-1")
    cfg["enabled_deserializers"]["enabled"]["bbr"] = False
    res = unary(run_upstream, rd, "Set", {"config": cfg})
    assert res["ok"], res
    assert res["response"]["config"]["marshal_to"] == "msgpack"
    c = rd.daemon.config
    assert (c.poll_frequency, c.poll_timeout, c.marshal_to, c.envelope_flush_threshold_rows, c.tag) == \
        (0.25, 0.2, "msgpack", 77, "INC-1")
    assert "bbr" not in c.enabled_deserializers and "info" in c.enabled_deserializers
    # the new frequency drives the running poll loop: ~4 polls/s instead of one a minute
    # (generous deadline: the machine may be busy; the old rate would give no poll at all)
    start = rd.daemon.loops
    assert rd.wait_loops(start + 4, timeout=5) >= start + 4


INVALID = [
    ({"poll_frequency": "0s"}, "poll_frequency"),
    ({"poll_frequency": None}, "poll_frequency"),
    ({"poll_timeout": "90s"}, "poll_timeout"),
    ({"marshal_to": "bogus"}, "marshal_to"),
    ({"dest": "carrierpigeon:x"}, "dest"),
    ({"netlinkers": 0}, "netlinkers"),
    ({"modulus": 0}, "modulus"),
    ({"envelope_flush_threshold_bytes": 10}, "envelope_flush_threshold_bytes"),
    ({"enabled_deserializers": {"enabled": {"nosuch": True}}}, "enabled_deserializers"),
    ({"io_uring": True}, "io_uring"),
    ({"grpc_port": 1}, "grpc_port"),
    ({"debug_level": 5000}, "debug_level"),
]


def test_invalid_set_refused_and_nothing_changes(start_daemon, run_upstream):
    rd = start_daemon(poll_frequency=30.0)
    before = rd.daemon.config.as_dict()
    good = unary(run_upstream, rd, "Get", {})["response"]["config"]
    ops = []
    for change, _ in INVALID:
        cfg = dict(good)
        for k, v in change.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        ops.append(["unary", "Set", {"config": cfg}])
    ops.append(["unary", "Set", {}])  # no config at all
    ops.append(["unary", "SetPollFrequency", {"poll_frequency": "1s", "poll_timeout": "2s"}])
    ops.append(["unary", "SetPollFrequency", {"poll_frequency": "1s"}])
    results = run_upstream(rd.target, ops)
    fields = [f for _, f in INVALID] + ["config", "poll_timeout", "poll_timeout"]
    for res, field in zip(results, fields):
        assert not res["ok"] and res["code"] == "INVALID_ARGUMENT", (field, res)
        assert res["details"].startswith(field + ":"), (field, res["details"])
    assert rd.daemon.config.as_dict() == before


def test_set_switches_marshaller_and_destination_live(start_daemon, run_upstream, socket_netns, tmp_path):
    first, second = tmp_path / "a.bin", tmp_path / "b.json"
    rd = start_daemon(dest=f"file:{first}", marshal_to="protobufList", poll_frequency=0.3, poll_timeout=0.2,
                      file_dest_dir=str(tmp_path))
    rd.wait_loops(1)
    cfg = unary(run_upstream, rd, "Get", {})["response"]["config"]
    cfg.update(dest=f"file:{second}", marshal_to="protoJson")
    assert unary(run_upstream, rd, "Set", {"config": cfg})["ok"]
    n = rd.daemon.loops
    rd.wait_loops(n + 2)
    rd.daemon.emitter.flush()
    text = second.read_text()
    assert socket_netns["name"] in text and text.lstrip().startswith(("{", "["))  # JSON, not protobuf
    assert first.stat().st_size > 0  # the first destination got the earlier polls


def test_destination_that_cannot_open_is_refused(start_daemon, run_upstream, tmp_path):
    out = tmp_path / "records.bin"
    rd = start_daemon(dest=f"file:{out}", poll_frequency=0.5, poll_timeout=0.4, file_dest_dir=str(tmp_path))
    before = rd.daemon.config.as_dict()
    cfg = unary(run_upstream, rd, "Get", {})["response"]["config"]
    cfg["dest"] = f"file:{tmp_path}/nonexistent-dir/x.bin"  # allowed place, but it cannot be opened
    res = unary(run_upstream, rd, "Set", {"config": cfg})
    assert res["code"] == "INVALID_ARGUMENT" and res["details"].startswith("dest: "), res
    assert f"{tmp_path}/nonexistent-dir/x.bin" in res["details"]
    assert rd.daemon.config.as_dict() == before
    # the old destination still receives records
    size = out.stat().st_size if out.exists() else 0
    n = rd.daemon.loops
    rd.wait_loops(n + 2)
    rd.daemon.emitter.flush()
    assert out.stat().st_size > size


def test_set_poll_frequency(start_daemon, run_upstream):
    rd = start_daemon(poll_frequency=60.0)
    res = unary(run_upstream, rd, "SetPollFrequency", {"poll_frequency": "0.300s", "poll_timeout": "0.250s"})
    assert res["ok"], res
    assert res["response"]["config"]["poll_frequency"] == "0.300s"
    assert rd.daemon.config.poll_frequency == pytest.approx(0.3)
    start = rd.daemon.loops
    assert rd.wait_loops(start + 3, timeout=5) >= start + 3


def test_trigger_poll_and_burst(start_daemon, run_upstream):
    rd = start_daemon(poll_frequency=600.0, poll_timeout=0.5)
    first = rd.wait_loops(1)
    assert unary(run_upstream, rd, "TriggerPoll", {})["ok"]
    assert rd.wait_loops(first + 1, timeout=5) == first + 1
    t0 = time.monotonic()
    res = unary(run_upstream, rd, "TriggerPollBurst", {"count": 3, "interval": "1s"})
    assert res["ok"], res
    assert res["response"] == {"count": 3, "interval": "1s"}
    assert rd.wait_loops(first + 4, timeout=6) == first + 4
    assert time.monotonic() - t0 >= 1.9  # spaced, not all at once
    bad = run_upstream(rd.target, [
        ["unary", "TriggerPollBurst", {"count": 0, "interval": "2s"}],
        ["unary", "TriggerPollBurst", {"count": 1001, "interval": "2s"}],
        ["unary", "TriggerPollBurst", {"count": 2, "interval": "0.400s"}],
        ["unary", "TriggerPollBurst", {"count": 2}],
    ])
    assert [(r["code"], r["details"].split(":")[0]) for r in bad] == [
        ("INVALID_ARGUMENT", "count"), ("INVALID_ARGUMENT", "count"),
        ("INVALID_ARGUMENT", "interval"), ("INVALID_ARGUMENT", "interval")]


def test_set_s3_upload_needs_s3_destination(start_daemon, run_upstream):
    rd = start_daemon()
    res = run_upstream(rd.target, [
        ["unary", "SetS3Upload", {}],
        ["unary", "SetS3Upload", {"s3_flush_interval": "5s"}],
    ])
    assert res[0]["code"] == "INVALID_ARGUMENT"
    assert res[1]["code"] == "FAILED_PRECONDITION" and "s3parquet" in res[1]["details"]


def test_set_s3_upload_retimes_the_running_s3parquet(start_daemon, run_upstream, tmp_path):
    """SetS3Upload changes the running destination's knobs (same object, not reopened):
    with the default 30-minute interval nothing would be written during this test."""
    need.module("pyarrow")
    rd = start_daemon(dest=f"s3parquet:{tmp_path}", poll_frequency=600.0, poll_timeout=0.5)
    dest = rd.daemon.emitter.dest
    assert dest.batch_max_seconds == 1800.0
    res = unary(run_upstream, rd, "SetS3Upload", {"s3_flush_interval": "0.500s",
                                                  "s3_parquet_flush_threshold_bytes": 2000000})
    assert res["ok"], res
    assert res["response"]["config"]["s3_flush_interval"] == "0.500s"
    assert res["response"]["config"]["s3_parquet_flush_threshold_bytes"] == 2000000
    assert rd.daemon.emitter.dest is dest
    assert (dest.batch_max_seconds, dest.batch_max_bytes) == (0.5, 2000000)
    first = rd.wait_loops(1)
    assert unary(run_upstream, rd, "TriggerPoll", {})["ok"]
    rd.wait_loops(first + 1, timeout=5)
    deadline = time.monotonic() + 10
    while not list(tmp_path.rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.1)
    files = list(tmp_path.rglob("*.parquet"))
    assert files and "/host=" in str(files[0]) and "/hour=" in str(files[0])


def test_flat_records_stream_carries_polled_sockets(start_daemon, run_upstream, socket_netns):
    rd = start_daemon(poll_frequency=0.5, poll_timeout=0.4)
    res = run_upstream(rd.target, [["stream", {"count": 2 * socket_netns["sockets"], "timeout": 20}]])[0]
    assert res["ok"], res
    recs = res["records"]
    assert len(recs) == 2 * socket_netns["sockets"]
    assert {r["netns"] for r in recs} == {socket_netns["name"]}
    ports = {r.get("inet_diag_msg_socket_source_port") for r in recs}
    assert 5000 in ports and len(ports) > 50  # the listener and the client ends
    assert all(r["hostname"] for r in recs)


def test_poll_flat_records_triggers_a_poll(start_daemon, run_upstream, socket_netns):
    rd = start_daemon(poll_frequency=600.0)
    before = rd.wait_loops(1)
    time.sleep(0.3)  # the startup poll's records are gone before the client connects
    res = run_upstream(rd.target, [["poll", {"requests": 1, "count": socket_netns["sockets"], "timeout": 15}]])[0]
    assert res["ok"], res
    assert len(res["records"]) == socket_netns["sockets"]
    assert rd.daemon.loops == before + 1  # the records came from the poll the request triggered


def test_health_and_reflection(start_daemon):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    rd = start_daemon()
    with grpc.insecure_channel(rd.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for svc in ("", "xtcp_config.v1.ConfigService", "xtcp_flat_record.v1.XTCPFlatRecordService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(iter(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                   timeout=5)))
        names = {s.name for s in resp.list_services_response.service}
        assert {"xtcp_config.v1.ConfigService", "xtcp_flat_record.v1.XTCPFlatRecordService",
                "grpc.health.v1.Health"} <= names


def test_second_server_on_same_port_fails_clearly(start_daemon):
    from xtcp2.api.grpc_server import start_grpc_server
    from xtcp2.errors import Xtcp2Error

    rd = start_daemon()
    with pytest.raises(Xtcp2Error, match=r"gRPC: cannot listen on 127\.0\.0\.1:%d" % rd.server.port):
        start_grpc_server(rd.daemon, rd.daemon.config.replace(grpc_port=rd.server.port))
