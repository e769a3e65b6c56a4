"""Where each setting comes from: flags, then the environment, then defaults.

The environment uses upstream's variable names (cmd/xtcp2 environmentOverride*: POLL_FREQUENCY,
DEST, XTCP_HOSTNAME, ...); settings upstream has no variable for take XTCP_ plus the flag in
SCREAMING_SNAKE (-bpfRingbufBytes -> XTCP_BPF_RINGBUF_BYTES). XTCP_CONFIG_JSON holds an
XtcpConfig in protojson (upstream's soft-restart carrier); the individual variables override
it, and flags override both. Upstream ignores an unparsable variable; xtcp2 refuses it with
the one-line error a bad flag gets, so a typo in a DaemonSet cannot silently fall back.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Callable, Mapping

from .errors import ConfigError, Xtcp2Error

CONFIG_JSON = "XTCP_CONFIG_JSON"

# Config field -> upstream's environment variable (cmd/xtcp2/xtcp2.go).
UPSTREAM_ENV = {
    "poll_frequency": "POLL_FREQUENCY",
    "poll_timeout": "POLL_TIMEOUT",
    "nl_timeout_milliseconds": "NLTIMEOUTMS",
    "max_loops": "MAX_LOOPS",
    "netlinkers": "NETLINKERS",
    "packet_size": "PACKET_SIZE",
    "modulus": "MODULUS",
    "poll_jitter_pct": "POLL_JITTER_PCT",
    "reconcile_frequency": "RECONCILE_FREQUENCY",
    "reconcile_before_poll": "RECONCILE_BEFORE_POLL",
    "populate_nsid": "POPULATE_NSID",
    "marshal_to": "MARSHAL",
    "dest": "DEST",
    "topic": "TOPIC",
    "envelope_flush_threshold_rows": "ENVELOPE_FLUSH_ROWS",
    "envelope_flush_threshold_bytes": "ENVELOPE_FLUSH_BYTES",
    "kafka_compression": "KAFKA_COMPRESSION",
    "capture_path": "CAPTUREPATH",
    "write_files": "WRITEFILES",
    "hostname": "XTCP_HOSTNAME",   # not HOSTNAME: shells and containers set that one
    "location": "LOCATION",
    "label": "LABEL",
    "tag": "TAG",
    "prom_listen": "PROM_LISTEN",
    "prom_path": "PROM_PATH",
    "grpc_port": "GRPC_PORT",
    "debug_level": "DEBUG_LEVEL",
    "enabled_deserializers": "DESERIALIZERS",
    "kafka_schema_url": "KAFKA_SCHEMA_URL",
    "xtcp_proto_file": "XTCP_PROTO_FILE",
    "kafka_produce_timeout": "KAFKA_PRODUCE_TIMEOUT",
    "s3_endpoint": "S3_ENDPOINT",
    "s3_bucket": "S3_BUCKET",
    "s3_prefix": "S3_PREFIX",
    "s3_region": "S3_REGION",
    "s3_skip_bucket_probe": "S3_SKIP_BUCKET_PROBE",
    "s3_parquet_flush_threshold_bytes": "S3_PARQUET_FLUSH_BYTES",
    "s3_flush_interval": "S3_FLUSH_INTERVAL",
    "s3_flush_jitter_pct": "S3_FLUSH_JITTER_PCT",
    "s3_flush_threshold_jitter_pct": "S3_FLUSH_THRESHOLD_JITTER_PCT",
    "s3_upload_max_attempts": "S3_UPLOAD_MAX_ATTEMPTS",
    "s3_upload_backoff_cap": "S3_UPLOAD_BACKOFF_CAP",
    "pyroscope_url": "PYROSCOPE_URL",            # named in upstream's -help
    "pyroscope_app_name": "PYROSCOPE_APP_NAME",
}


class EnvValueError(Xtcp2Error):
    """A variable that does not parse; printed like argparse's error for a bad flag."""

    def __init__(self, var: str, message: str) -> None:
        super().__init__(f"error: environment {var}: {message} (see -help)")


def env_name(flag: str, dest: str) -> str:
    """The variable that sets -flag (whose Config field or argparse dest is `dest`)."""
    if dest in UPSTREAM_ENV:
        return UPSTREAM_ENV[dest]
    return "XTCP_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", flag).replace("-", "_").upper()


class Option:
    """One setting that a flag, a variable or XTCP_CONFIG_JSON can give."""

    def __init__(self, flag: str, dest: str, parse: Callable[[str], Any], env: str = "") -> None:
        self.flag = flag                   # without dashes, as -help shows it
        self.dest = dest                   # argparse dest (a Config field for most)
        self.parse = parse                 # the flag's type function: same checks, same messages
        self.env = env or env_name(flag, dest)

    def __repr__(self) -> str:
        return f"Option(-{self.flag}, {self.env})"


class Layers:
    """Values by dest, and where each came from ("flag -x", "env X", XTCP_CONFIG_JSON)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def put(self, dest: str, value: Any, source: str) -> None:
        self.values[dest] = value
        self.sources[dest] = source


def _parse_env(opt: Option, text: str) -> Any:
    try:
        return opt.parse(text)
    except (argparse.ArgumentTypeError, ValueError, ConfigError) as e:
        if opt.parse in (int, float):  # argparse words it so for a flag
            raise EnvValueError(opt.env, f"invalid {opt.parse.__name__} value: {text!r}") from None
        raise EnvValueError(opt.env, str(e)) from None


def from_environment(options: list[Option], environ: Mapping[str, str],
                     parse_json: Callable[[str], dict[str, Any]]) -> Layers:
    """XTCP_CONFIG_JSON (read by parse_json: xtcp2.api.config_json) first, then the
    individual variables over it."""
    out = Layers()
    if environ.get(CONFIG_JSON, "").strip():
        for dest, value in parse_json(environ[CONFIG_JSON]).items():
            out.put(dest, value, CONFIG_JSON)
    for opt in options:
        if opt.env in environ:
            out.put(opt.dest, _parse_env(opt, environ[opt.env]), f"env {opt.env}")
    return out
