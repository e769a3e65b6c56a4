"""One validated configuration, shared by the command line, the gRPC API and the daemon.

Field names follow upstream's XtcpConfig (xtcp_config.v1) in snake_case so the gRPC
mapping is mechanical. Durations are float seconds. `validate()` raises ConfigError
naming the field; a Config that passed it is safe to hand to the daemon. Flags and
gRPC Set both end in validate(), so they accept and refuse exactly the same values;
the ranges are in one table (RANGES) checked by xtcp2.values.
"""
from __future__ import annotations

import socket

from . import values
from .dest import known_schemes
from .errors import ConfigError
from .marshal import MARSHALLERS as _MARSHALLER_REGISTRY

# Netlink attribute decoders, named as upstream's -deserializers keys.
ALL_DESERIALIZERS = (
    "meminfo", "info", "vegas", "cong", "tos", "tc", "skmem", "shut",
    "dctcp", "bbr", "classid", "cgroup", "sockopt",
)
# meminfo duplicates skmem value for value; upstream leaves it off by default.
DEFAULT_DESERIALIZERS = tuple(d for d in ALL_DESERIALIZERS if d != "meminfo")

MARSHALLERS = tuple(_MARSHALLER_REGISTRY)   # names from the registry in xtcp2.marshal
MODES = ("poll", "bpf", "auto")
# how a namespace's sockets are read: the BPF TCP iterator, inet_diag, or iter where it loads
COLLECTORS = ("auto", "iter", "netlink")
MAX_TEXT = 255        # record metadata (hostname, label...): upstream's max_len
MAX_DEST = 512
DAY = 24 * 3600.0

# Poll-mode read buffers: each netlinker keeps CHUNKS_PER_WORKER chunks of chunk_bytes().
# Their product is bounded so that a Set over gRPC (netlinkers=256, packet_size=16 MiB)
# cannot make the daemon reserve many GiB.
CHUNKS_PER_WORKER = 3
CHUNK_MEMORY_MAX = 1 << 30


def chunk_bytes(packet_size: int) -> int:
    return max(4 << 20, 4 * packet_size)


# field -> (minimum, maximum, integer); durations are seconds. A value that is not a
# finite number in range is refused, whichever way it came in.
RANGES: dict[str, tuple[float, float, bool]] = {
    "poll_frequency": (0.01, 7 * DAY, False),   # more often than 100/s is a mistake, not a setting
    "poll_timeout": (0.0, 7 * DAY, False),      # > 0, checked below
    "nl_timeout_milliseconds": (0, 100_000, True),
    "max_loops": (0, 1_000_000_000, True),
    "netlinkers": (1, 256, True),
    "packet_size": (4096, 16 << 20, True),
    "modulus": (1, 1_000_000, True),
    "poll_jitter_pct": (0, 100, True),
    "reconcile_frequency": (0.0, 7 * DAY, False),
    "resync_frequency": (0.0, 7 * DAY, False),
    "bpf_ringbuf_bytes": (4096, 1 << 30, True),
    "bpf_coalesce_window": (0.0, 10.0, False),
    "bpf_close_wait": (0.0, 60.0, False),
    "liveness_timeout": (0.0, 7 * DAY, False),
    "envelope_flush_threshold_rows": (1, 10_000_000, True),
    "kafka_produce_timeout": (0.0, 3600.0, False),
    "s3_parquet_flush_threshold_bytes": (0, 4 << 30, True),
    "s3_flush_interval": (0.0, 7 * DAY, False),
    "s3_flush_jitter_pct": (0, 100, True),
    "s3_flush_threshold_jitter_pct": (0, 100, True),
    "s3_upload_max_attempts": (0, 1000, True),
    "s3_upload_backoff_cap": (0.0, 7 * DAY, False),
    "envelope_flush_threshold_bytes": (1024, 1 << 30, True),
    "write_files": (0, 1000, True),
    "grpc_port": (0, 65535, True),
    "debug_level": (0, 1000, True),
    "metrics_max_netns": (1, 100_000, True),
    "uplink_count": (0, 2, True),               # 0 = 2: the schema's two uplink slots
    "pyroscope_sample_hz": (0, 1000, True),     # 0 = 100, as upstream
    "pyroscope_upload_interval_sec": (0, 3600, True),  # 0 = 15, as upstream
}
TEXT_FIELDS = {"hostname": MAX_TEXT, "location": MAX_TEXT, "label": MAX_TEXT, "tag": MAX_TEXT,
               "dest": MAX_DEST, "topic": MAX_TEXT, "kafka_compression": 32, "capture_path": 4096,
               "prom_listen": MAX_TEXT, "prom_path": MAX_TEXT, "grpc_listen": MAX_TEXT, "mode": 16, "collector": 16,
               "marshal_to": 32, "grpc_allow_uid": MAX_TEXT, "grpc_allow_gid": MAX_TEXT,
               "grpc_token_file": 4096, "file_dest_dir": 4096,
               "kafka_schema_url": MAX_DEST, "xtcp_proto_file": 4096, "s3_endpoint": MAX_DEST,
               "s3_bucket": 63, "s3_prefix": 1024, "s3_region": 64, "csv_columns": 4096,
               "grpc_tls_cert": 4096, "grpc_tls_key": 4096, "grpc_tls_client_ca": 4096,
               "lldpd_socket_path": MAX_TEXT, "lldpd_version_hint": 16,
               "docker_socket_path": 4096, "web_config_file": 4096, "pyroscope_url": MAX_DEST,
               "pyroscope_app_name": MAX_TEXT}


def parse_deserializers(spec: str) -> tuple[str, ...]:
    """'default', 'all', '' (none) or a comma-separated subset."""
    spec = spec.strip()
    if spec == "default":
        return DEFAULT_DESERIALIZERS
    if spec == "all":
        return ALL_DESERIALIZERS
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_DESERIALIZERS]
    if unknown:
        raise ConfigError("deserializers", f"unknown {', '.join(unknown)}; valid: {', '.join(ALL_DESERIALIZERS)}, default, all")
    return names


class Config:
    """Every setting, by keyword (`Config(dest="kafka:...")`); each field not given
    takes its default below, a list default as a fresh list. A plain class, not a
    dataclass: building a 77-field dataclass costs every start-up ~3 ms."""

    # polling
    mode: str = "auto"
    collector: str = "auto"
    poll_frequency: float = 10.0
    poll_timeout: float = 5.0
    nl_timeout_milliseconds: int = 1000
    max_loops: int = 0
    netlinkers: int = 4
    packet_size: int = 65536
    modulus: int = 1
    poll_jitter_pct: int = 0
    reconcile_frequency: float = 6 * 3600.0
    reconcile_before_poll: bool = True
    # bpf mode
    resync_frequency: float = 0.0          # full resync period; 0 = 10 x poll_frequency
    bpf_ringbuf_bytes: int = 16 << 20      # BPF ring buffer size, a power of two >= 4096
    bpf_refresh_frequency: float | None = None  # refresh of live sockets; None = poll_frequency, 0 = off
    bpf_coalesce_window: float = 0.005     # opens in one namespace wait this long to share one read
    bpf_close_wait: float = 0.0            # hold BPF close records this long for their broadcast
    once: bool = False
    netns: list[str] = []
    enabled_deserializers: tuple[str, ...] = DEFAULT_DESERIALIZERS
    populate_nsid: bool = True
    # socket identity (names as upstream's XtcpConfig; resolve_process is xtcp2's)
    resolve_process: bool = True           # pid + comm of the process holding each socket
    resolve_container_id: bool = False     # container id + runtime from the socket's cgroup
    enrich_container_enable: bool = False  # container name/image/pod from the Docker Engine API
    docker_socket_path: str = "/run/docker.sock"
    # output
    marshal_to: str = "protobufList"
    dest: str = "null"
    topic: str = "xtcp"
    envelope_flush_threshold_rows: int = 10000
    envelope_flush_threshold_bytes: int = 768 * 1024
    capture_path: str = ""
    write_files: int = 10
    kafka_compression: str = ""
    kafka_produce_timeout: float = 0.0     # -produceTimeout: per-request timeout (kafka, http); 0 = each one's default
    kafka_schema_url: str = ""             # -kafkaSchemaUrl: register xtcp_proto_file there at start ("" = don't)
    xtcp_proto_file: str = ""              # -xtcpProtoFile: the .proto to register ("" = the packaged one)
    # s3parquet (upstream's names; 0 / "" = upstream's default or its S3_* environment variable)
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_region: str = ""
    s3_skip_bucket_probe: bool = False
    s3_parquet_flush_threshold_bytes: int = 0   # 0 = 63 MiB
    s3_flush_interval: float = 0.0              # 0 = max(poll_frequency, 30 min)
    s3_flush_jitter_pct: int = 0
    s3_flush_threshold_jitter_pct: int = 0
    s3_upload_max_attempts: int = 0             # 0 = 10
    s3_upload_backoff_cap: float = 0.0          # 0 = clamp(poll_frequency / 10, 1 s, 1 h)
    csv_columns: str = ""                  # csv/tsv: -columns, protojson field names; empty = all
    # record metadata
    hostname: str = ""
    location: str = ""
    label: str = ""
    tag: str = ""
    # uplink NIC / LLDP enrichment (uplink1_* / uplink2_* fields)
    enrich_nic_enable: bool = False
    enrich_lldp_enable: bool = False
    lldpd_socket_path: str = "/run/lldpd.socket"
    lldpd_version_hint: str = ""           # upstream's; lldpcli always matches lldpd, so unused
    uplink_count: int = 2                  # 0 = 2 (the schema's two slots)
    uplink_interfaces: list[str] = []      # empty = default routes' interfaces
    # control plane
    prom_listen: str = "127.0.0.1:9088"
    prom_path: str = "/metrics"
    grpc_port: int = 8889
    grpc_listen: str = "127.0.0.1"
    # who may use the gRPC API besides root (see xtcp2/api/grpc_auth.py); never settable over gRPC
    grpc_allow_uid: str = ""               # comma list of uids / user names
    grpc_allow_gid: str = ""               # comma list of gids / group names
    grpc_token_file: str = ""              # bearer token; required on a non-loopback listener
    file_dest_dir: str = "/var/lib/xtcp2"  # the only place gRPC may point file/unix dests and capture_path
    metrics_max_netns: int = 100           # label sets of the TCP metrics; the rest is netns="other"
    grpc_tls_cert: str = ""                # PEM certificate chain: serve gRPC over TLS
    grpc_tls_key: str = ""                 # its private key (root-owned, not readable by others)
    grpc_tls_client_ca: str = ""           # PEM CA bundle: require client certificates (mTLS)
    liveness_timeout: float = 0.0          # /healthz: loop stuck after this long; 0 = max(60 s, 3 x frequency)
    web_config_file: str = ""              # metrics listener TLS / basic auth (exporter-toolkit YAML)
    # continuous profiling push (upstream's names; the pyroscope-io extra); "" = off
    pyroscope_url: str = ""
    pyroscope_app_name: str = "xtcp2"
    pyroscope_sample_hz: int = 100
    pyroscope_upload_interval_sec: int = 15
    debug_level: int = 111

    def __init__(self, **settings: object) -> None:
        unknown = settings.keys() - FIELDS.keys()
        if unknown:
            raise TypeError(f"Config has no field {', '.join(sorted(unknown))}")
        for name, default in FIELDS.items():
            value = settings.get(name, default)
            setattr(self, name, [] if value is default and type(default) is list else value)
        if not self.hostname:
            self.hostname = socket.gethostname()

    def __eq__(self, other: object) -> bool:
        if type(other) is not Config:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in FIELDS)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS) + ")"

    def validate(self) -> "Config":
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(name, msg)

        def check(name: str, fn, *args, **kw):
            try:
                return fn(getattr(self, name), *args, **kw)
            except ValueError as e:
                raise ConfigError(name, str(e)) from None

        for name, (lo, hi, integer) in RANGES.items():
            check(name, values.number, lo, hi, integer=integer, unit="" if integer else " s")
        if self.bpf_refresh_frequency is not None:
            check("bpf_refresh_frequency", values.number, 0.0, 7 * DAY, unit=" s")
        for name, limit in TEXT_FIELDS.items():
            check(name, values.text, limit)
        for i, name in enumerate(self.netns):
            try:
                values.text(name, MAX_TEXT)
            except ValueError as e:
                raise ConfigError("netns", f"name {i + 1}: {e}") from None
        need(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}, not {self.mode!r}")
        need(self.collector in COLLECTORS, "collector", f"must be one of {', '.join(COLLECTORS)}, not {self.collector!r}")
        need(self.poll_timeout > 0, "poll_timeout", "must be > 0")
        need(self.poll_timeout <= self.poll_frequency or self.once, "poll_timeout",
             "must not exceed poll_frequency")
        buffers = self.netlinkers * CHUNKS_PER_WORKER * chunk_bytes(self.packet_size)
        need(buffers <= CHUNK_MEMORY_MAX, "netlinkers",
             f"netlinkers x packet_size would reserve {buffers >> 20} MiB of read buffers "
             f"(at most {CHUNK_MEMORY_MAX >> 20} MiB); use fewer netlinkers or a smaller packet_size")
        rb = self.bpf_ringbuf_bytes
        need(rb & (rb - 1) == 0, "bpf_ringbuf_bytes", "must be a power of two >= 4096")
        need(self.marshal_to in MARSHALLERS, "marshal_to",
             f"unknown marshaller {self.marshal_to!r}; valid: {', '.join(MARSHALLERS)}")
        if self.csv_columns:
            from .marshal.human import select_columns
            select_columns(self.csv_columns)  # an unknown name is a ConfigError naming it
        unknown = [d for d in self.enabled_deserializers if d not in ALL_DESERIALIZERS]
        need(not unknown, "enabled_deserializers", f"unknown {', '.join(unknown)}")
        scheme = self.dest.split(":", 1)[0]
        need(scheme in known_schemes(), "dest",
             f"unknown destination scheme {scheme!r}; valid: {', '.join(sorted(known_schemes()))}")
        need(len(self.uplink_interfaces) <= 2, "uplink_interfaces", "at most 2 interfaces (two uplink slots)")
        for name in self.uplink_interfaces:
            try:
                values.ifname(name)
            except ValueError as e:
                raise ConfigError("uplink_interfaces", str(e)) from None
        need(self.lldpd_socket_path.startswith("/"), "lldpd_socket_path", "must be an absolute path")
        need(not self.docker_socket_path or self.docker_socket_path.startswith("/"), "docker_socket_path",
             "must be an absolute path to a unix socket")
        if self.pyroscope_url:
            try:
                values.http_url(self.pyroscope_url)
            except ValueError as e:
                raise ConfigError("pyroscope_url", str(e)) from None
        return self

    def replace(self, **changes: object) -> "Config":
        """A validated copy with `changes` applied; self is untouched if invalid."""
        return self.copy(**changes).validate()

    def copy(self, **changes: object) -> "Config":
        """A copy with `changes` applied, not validated."""
        return Config(**{**self.as_dict(), **changes})

    def as_dict(self) -> dict:
        """Every field by name; lists are copies."""
        out = {}
        for name in FIELDS:
            value = getattr(self, name)
            out[name] = list(value) if type(value) is list else value
        return out


# field name -> default, in declaration order (the annotated class attributes)
FIELDS: dict[str, object] = {name: Config.__dict__[name] for name in Config.__annotations__}
