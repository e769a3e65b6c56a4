"""Config <-> XtcpConfig conversion and the validation that replaces upstream's buf.validate rules."""
from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from xtcp2.api.config_proto import config_from_proto, config_to_proto
from xtcp2.config import ALL_DESERIALIZERS, Config
from xtcp2.errors import ConfigError


def current() -> Config:
    return Config(poll_frequency=20.0, poll_timeout=2.5, marshal_to="protoText", tag="x",
                  netns=["a"], mode="poll", prom_listen="127.0.0.1:1").validate()


def test_round_trip_is_identity():
    cur = current()
    msg = config_to_proto(cur)
    assert msg.poll_frequency.seconds == 20 and msg.poll_timeout.nanos == 500_000_000
    assert config_from_proto(msg, cur) == cur


def test_fields_outside_the_proto_are_kept():
    cur = current()
    msg = config_to_proto(cur)
    msg.label = "new"
    new = config_from_proto(msg, cur)
    assert new.label == "new"
    assert (new.netns, new.mode, new.prom_listen) == (["a"], "poll", "127.0.0.1:1")
    assert cur.label == ""  # the current config is not touched


def test_zero_means_default_for_upstream_zero_default_fields():
    cur = current().replace(envelope_flush_threshold_rows=5, packet_size=8192)
    msg = config_to_proto(cur)
    msg.envelope_flush_threshold_rows = 0
    msg.packet_size = 0
    new = config_from_proto(msg, cur)
    assert new.envelope_flush_threshold_rows == Config().envelope_flush_threshold_rows
    assert new.packet_size == Config().packet_size


def test_deserializer_map_toggles_only_named_keys():
    cur = current()
    msg = config_to_proto(cur)
    msg.enabled_deserializers.enabled.clear()
    msg.enabled_deserializers.enabled["meminfo"] = True
    msg.enabled_deserializers.enabled["bbr"] = False
    new = config_from_proto(msg, cur)
    assert "meminfo" in new.enabled_deserializers and "bbr" not in new.enabled_deserializers
    assert "info" in new.enabled_deserializers
    assert list(new.enabled_deserializers) == [d for d in ALL_DESERIALIZERS if d in new.enabled_deserializers]


def test_secrets_never_leave_and_upstream_tuning_is_ignored():
    cur = current()
    msg = config_to_proto(cur)
    assert msg.s3_secret_key == "" and msg.s3_access_key == ""
    msg.netlinkers_done_chan_size = 5  # upstream requires >= 1; meaningless here
    msg.io_uring_recv_batch_size = 64
    msg.daemon_version = "whatever"    # read-only
    assert config_from_proto(msg, cur) == cur


@pytest.mark.parametrize("mutate, field", [
    (lambda m: m.ClearField("poll_frequency"), "poll_frequency"),
    (lambda m: m.poll_frequency.CopyFrom(duration_pb2.Duration(seconds=-1)), "poll_frequency"),
    (lambda m: m.poll_frequency.CopyFrom(duration_pb2.Duration(seconds=8 * 86400)), "poll_frequency"),
    (lambda m: m.poll_frequency.CopyFrom(duration_pb2.Duration(seconds=1, nanos=-5)), "poll_frequency"),
    (lambda m: m.poll_timeout.CopyFrom(duration_pb2.Duration(seconds=0)), "poll_timeout"),
    (lambda m: setattr(m, "marshal_to", ""), "marshal_to"),
    (lambda m: setattr(m, "dest", ""), "dest"),
    (lambda m: setattr(m, "dest", "null:" + "x" * 600), "dest"),
    (lambda m: setattr(m, "netlinkers", 1000), "netlinkers"),
    (lambda m: setattr(m, "poll_jitter_pct", 101), "poll_jitter_pct"),
    (lambda m: setattr(m, "pyroscope_url", "http://x"), "pyroscope_url"),
    (lambda m: setattr(m, "s3_secret_key", "k"), "s3_secret_key"),
    (lambda m: m.uplink_interfaces.append("eth/0"), "uplink_interfaces"),  # supported; a bad name is refused
    (lambda m: setattr(m, "hostname", "h" * 300), "hostname"),
    (lambda m: setattr(m, "capture_path", "p" * 5000), "capture_path"),
])
def test_invalid_values_name_the_field(mutate, field):
    cur = current()
    msg = config_to_proto(cur)
    mutate(msg)
    with pytest.raises(ConfigError) as e:
        config_from_proto(msg, cur)
    assert e.value.field == field, str(e.value)
    assert str(e.value).startswith(field + ": ")


def test_grpc_port_zero_keeps_running_port():
    cur = current().replace(grpc_port=4321)
    msg = config_to_proto(cur)
    msg.grpc_port = 0
    assert config_from_proto(msg, cur).grpc_port == 4321


def test_nlmsg_seq_from_upstream_is_ignored():
    """xtcp2 has no -nlmsgSeq (each sock_diag socket numbers its own requests); an upstream
    client's Get-modify-Set that carries 666 must still apply."""
    cur = current()
    msg = config_to_proto(cur)
    assert msg.nlmsg_seq == 0
    msg.nlmsg_seq = 666
    assert config_from_proto(msg, cur) == cur


def test_container_enrichment_fields_map_to_upstreams_names():
    cur = current()
    msg = config_to_proto(cur)
    assert (msg.resolve_container_id, msg.enrich_container_enable, msg.docker_socket_path) == \
        (False, False, "/run/docker.sock")
    msg.resolve_container_id = True
    msg.enrich_container_enable = True
    msg.docker_socket_path = "/run/podman/podman.sock"
    new = config_from_proto(msg, cur)
    assert (new.resolve_container_id, new.enrich_container_enable, new.docker_socket_path) == \
        (True, True, "/run/podman/podman.sock")
    assert new.resolve_process   # xtcp2's own flag, not in the proto: kept
    msg.docker_socket_path = "relative/docker.sock"
    with pytest.raises(ConfigError, match="docker_socket_path"):
        config_from_proto(msg, cur)


def test_pyroscope_settings_are_shown_but_fixed_while_running():
    cur = current().replace(pyroscope_url="http://127.0.0.1:4040", pyroscope_sample_hz=50)
    msg = config_to_proto(cur)
    assert (msg.pyroscope_url, msg.pyroscope_app_name, msg.pyroscope_sample_hz,
            msg.pyroscope_upload_interval_sec) == ("http://127.0.0.1:4040", "xtcp2", 50, 15)
    assert config_from_proto(msg, cur) == cur          # a Get-modify-Set round trip keeps them
    for field, value in (("pyroscope_url", "http://elsewhere:4040"), ("pyroscope_sample_hz", 10),
                         ("pyroscope_app_name", "other"), ("pyroscope_upload_interval_sec", 1)):
        changed = config_to_proto(cur)
        setattr(changed, field, value)
        with pytest.raises(ConfigError, match=f"^{field}: cannot change while running"):
            config_from_proto(changed, cur)
