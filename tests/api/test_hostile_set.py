"""Hostile ConfigService.Set calls: every one is INVALID_ARGUMENT with a one-line message,
changes nothing and leaves no traceback in the daemon's log."""
from __future__ import annotations

import logging

import grpc
import pytest

from xtcp2.api.config_proto import config_to_proto
from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2 as pb
from xtcp2.gen.xtcp_config.v1 import xtcp_config_pb2_grpc as pb_grpc

pytestmark = pytest.mark.root

SET = "/xtcp_config.v1.ConfigService/Set"


def _bad_configs(good: pb.XtcpConfig) -> list[tuple[str, pb.XtcpConfig]]:
    out = []
    for field, value in [("dest", "file:/tmp/x\x00y"), ("dest", "null\x00"), ("hostname", "web1\nINJECTED"),
                         ("label", "\x1b[31mred\x1b[0m"), ("location", "a\rb"), ("tag", "t\u2028u"),
                         ("topic", "x\x07"), ("capture_path", "/tmp/\x00")]:
        msg = pb.XtcpConfig()
        msg.CopyFrom(good)
        setattr(msg, field, value)
        out.append((field, msg))
    return out


def test_control_characters_and_nul_are_invalid_argument(start_daemon, caplog):
    rd = start_daemon()
    before = rd.daemon.config.as_dict()
    good = config_to_proto(rd.daemon.config)
    caplog.set_level(logging.DEBUG)
    with grpc.insecure_channel(rd.target) as ch:
        stub = pb_grpc.ConfigServiceStub(ch)
        for field, msg in _bad_configs(good):
            with pytest.raises(grpc.RpcError) as err:
                stub.Set(pb.SetRequest(config=msg), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.value.details())
            details = err.value.details()
            assert details.startswith(f"{field}: contains control character"), details
            assert "\n" not in details and "\x00" not in details and "\x1b" not in details
    assert rd.daemon.config.as_dict() == before
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\x05abc", b"\x0a\x02\x08\xff" * 3,
                                     bytes(range(256)), b"\x0a\xff\xff\xff\xff\x0f"])
def test_garbage_set_bytes_are_invalid_argument_without_traceback(start_daemon, caplog, payload):
    rd = start_daemon()
    before = rd.daemon.config.as_dict()
    caplog.set_level(logging.DEBUG)
    with grpc.insecure_channel(rd.target) as ch:
        raw = ch.unary_unary(SET, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            raw(payload, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "\n" not in err.value.details() and "not a valid" in err.value.details()
    assert rd.daemon.config.as_dict() == before
    noisy = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not noisy, [r.getMessage() for r in noisy]


def test_non_finite_and_absurd_durations_over_set(start_daemon):
    """gRPC durations are integers, but absurd ones (beyond 7 days, a frequency under 10 ms)
    are refused exactly as the flags refuse them."""
    rd = start_daemon()
    good = config_to_proto(rd.daemon.config)
    with grpc.insecure_channel(rd.target) as ch:
        stub = pb_grpc.ConfigServiceStub(ch)
        for field, seconds, nanos in [("poll_frequency", 0, 1), ("poll_frequency", 10**9, 0),
                                      ("reconcile_frequency", 8 * 86400, 0)]:
            msg = pb.XtcpConfig()
            msg.CopyFrom(good)
            getattr(msg, field).seconds, getattr(msg, field).nanos = seconds, nanos
            with pytest.raises(grpc.RpcError) as err:
                stub.Set(pb.SetRequest(config=msg), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith(field + ":"), err.value.details()
