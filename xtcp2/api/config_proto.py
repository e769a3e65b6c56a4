"""Config <-> xtcp_config.v1.XtcpConfig, with the validation upstream expresses as buf.validate rules.

Mapping is by name: a proto field maps to the Config attribute of the same name, so a
field the lead adds to Config later is carried without changes here. Proto fields with
no Config counterpart are upstream features xtcp2 lacks: Set refuses a value that
would switch one on and ignores pure tuning knobs of those features.

Every refusal is a ConfigError naming the proto field, which the gRPC layer turns into
INVALID_ARGUMENT; nothing is applied unless the whole request is valid.
"""
from __future__ import annotations

from google.protobuf import duration_pb2

from .. import __version__, values
from ..config import ALL_DESERIALIZERS, FIELDS, Config
from ..errors import ConfigError
from ..gen.xtcp_config.v1 import xtcp_config_pb2 as pb

MAX_DURATION_S = values.MAX_DURATION_S  # upstream's bound for its durations
MAX_STRING = 4096

_PROTO_FIELDS = {f.name: f for f in pb.XtcpConfig.DESCRIPTOR.fields}

# Never handed out, not even to allowed callers; an empty value in Set means "unchanged".
SECRET_FIELDS = frozenset({"s3_access_key", "s3_secret_key"})
# Informational, filled by the daemon.
READ_ONLY_FIELDS = frozenset({"daemon_version"})
# Fixed for the life of the process (the listener is already bound). 0 = keep.
# lldpd_socket_path too: a Set must not make the root daemon (through lldpcli) connect to
# any unix socket on the host; like other local paths, it is the operator's choice.
# The pyroscope agent starts once, and a Set must not send the daemon's profiles elsewhere.
FIXED_FIELDS = frozenset({"grpc_port", "lldpd_socket_path", "pyroscope_url", "pyroscope_app_name",
                          "pyroscope_sample_hz", "pyroscope_upload_interval_sec"})
# 0 means "the built-in default", as upstream documents for these fields.
ZERO_IS_DEFAULT = frozenset({"packet_size", "envelope_flush_threshold_bytes", "envelope_flush_threshold_rows"})
# Must be present / non-empty, as upstream's `required = true`.
REQUIRED = frozenset({"poll_frequency", "poll_timeout", "marshal_to", "dest"})
# Upstream-only knobs that merely tune a feature xtcp2 does not have: accepted and ignored,
# so a config written for upstream still applies. Everything else unmapped is refused
# when non-zero, because silently ignoring it would promise behaviour that is not there.
IGNORED_TUNING = frozenset({
    "netlinkers_done_chan_size", "packet_size_mply",
    "io_uring_recv_batch_size", "io_uring_cqe_batch_size",
    "nlmsg_seq",   # each sock_diag socket numbers its own requests from 1
})

_DEFAULTS = Config()


def _is_duration(fd) -> bool:
    return fd.message_type is not None and fd.message_type.full_name == "google.protobuf.Duration"


def _is_deserializers(fd) -> bool:
    return fd.message_type is not None and fd.message_type.full_name == "xtcp_config.v1.EnabledDeserializers"


def _is_repeated(fd) -> bool:
    return fd.is_repeated


def duration_to_seconds(d: duration_pb2.Duration, name: str) -> float:
    if not -999_999_999 <= d.nanos <= 999_999_999 or (d.seconds > 0 > d.nanos) or (d.seconds < 0 < d.nanos):
        raise ConfigError(name, "malformed duration (nanos out of range or sign mismatch)")
    s = d.seconds + d.nanos / 1e9
    if s < 0:
        raise ConfigError(name, "must not be negative")
    if s > MAX_DURATION_S:
        raise ConfigError(name, f"must be at most {MAX_DURATION_S} s (7 days)")
    return s


def seconds_to_duration(s: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(s * 1e9))
    return d


def _is_set(msg: pb.XtcpConfig, fd) -> bool:
    if _is_repeated(fd):
        return len(getattr(msg, fd.name)) > 0
    if fd.message_type is not None:
        return msg.HasField(fd.name)
    return getattr(msg, fd.name) != fd.default_value


def config_to_proto(cfg: Config) -> pb.XtcpConfig:
    """The XtcpConfig Get returns: every mapped field, secrets blank, daemon_version filled."""
    out = pb.XtcpConfig()
    for name, fd in _PROTO_FIELDS.items():
        if name not in FIELDS or name in SECRET_FIELDS:
            continue
        value = getattr(cfg, name)
        if _is_duration(fd):
            getattr(out, name).CopyFrom(seconds_to_duration(float(value)))
        elif _is_deserializers(fd):
            enabled = set(value)
            for d in ALL_DESERIALIZERS:
                out.enabled_deserializers.enabled[d] = d in enabled
        elif _is_repeated(fd):
            getattr(out, name).extend(value)
        elif value is not None:
            setattr(out, name, value)
    out.daemon_version = __version__
    return out


def _deserializers_from_proto(msg: pb.EnabledDeserializers, current: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(k for k in msg.enabled if k not in ALL_DESERIALIZERS)
    if unknown:
        raise ConfigError("enabled_deserializers",
                          f"unknown {', '.join(unknown)}; valid: {', '.join(ALL_DESERIALIZERS)}")
    on = set(current)
    for k, v in msg.enabled.items():
        (on.add if v else on.discard)(k)
    return tuple(d for d in ALL_DESERIALIZERS if d in on)


def config_from_proto(msg: pb.XtcpConfig, current: Config) -> Config:
    """The validated Config a Set of `msg` produces; `current` supplies what the proto lacks.

    Raises ConfigError(field, message) on the first invalid value; `current` is untouched.
    """
    changes: dict[str, object] = {}
    for name, fd in _PROTO_FIELDS.items():
        present = _is_set(msg, fd)
        if name in REQUIRED and not present:
            raise ConfigError(name, "required")
        if fd.type == fd.TYPE_STRING and not _is_repeated(fd) and len(getattr(msg, name)) > MAX_STRING:
            raise ConfigError(name, f"longer than {MAX_STRING} characters")
        if name in READ_ONLY_FIELDS:
            continue
        if name not in FIELDS:
            if present and name not in IGNORED_TUNING:
                raise ConfigError(name, "not supported by xtcp2; leave it unset (0/empty/false)")
            continue
        if name in SECRET_FIELDS and not present:
            continue
        if name in FIXED_FIELDS:
            value = getattr(msg, name)
            if present and value != getattr(current, name):
                raise ConfigError(name, f"cannot change while running (currently {getattr(current, name)}); restart the daemon")
            continue
        if _is_duration(fd):
            changes[name] = duration_to_seconds(getattr(msg, name), name) if present else 0.0
        elif _is_deserializers(fd):
            if present:
                changes[name] = _deserializers_from_proto(msg.enabled_deserializers, tuple(current.enabled_deserializers))
        elif _is_repeated(fd):
            changes[name] = list(getattr(msg, name))
        else:
            value = getattr(msg, name)
            if name in ZERO_IS_DEFAULT and not present:
                value = getattr(_DEFAULTS, name)
            changes[name] = value
    try:
        return current.replace(**changes)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # a type the Config does not accept
        raise ConfigError("config", str(e)) from None
