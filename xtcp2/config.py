"""One validated configuration, shared by the command line, the gRPC API and the daemon.

Field names follow upstream's XtcpConfig (xtcp_config.v1) in snake_case so the gRPC
mapping is mechanical. Durations are float seconds. `validate()` raises ConfigError
naming the field; a Config that passed it is safe to hand to the daemon.
"""
from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field

from .errors import ConfigError

# Netlink attribute decoders, named as upstream's -deserializers keys.
ALL_DESERIALIZERS = (
    "meminfo", "info", "vegas", "cong", "tos", "tc", "skmem", "shut",
    "dctcp", "bbr", "classid", "cgroup", "sockopt",
)
# meminfo duplicates skmem value for value; upstream leaves it off by default.
DEFAULT_DESERIALIZERS = tuple(d for d in ALL_DESERIALIZERS if d != "meminfo")

MARSHALLERS = ("protobufList", "protoJson", "protoText", "msgpack")
MODES = ("poll", "bpf", "auto")


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


@dataclass
class Config:
    # polling
    mode: str = "auto"
    poll_frequency: float = 10.0
    poll_timeout: float = 5.0
    nl_timeout_milliseconds: int = 1000
    max_loops: int = 0
    netlinkers: int = 4
    nlmsg_seq: int = 666
    packet_size: int = 65536
    modulus: int = 1
    poll_jitter_pct: int = 0
    reconcile_frequency: float = 6 * 3600.0
    reconcile_before_poll: bool = True
    # bpf mode
    resync_frequency: float = 0.0          # full resync period; 0 = 10 x poll_frequency
    bpf_ringbuf_bytes: int = 16 << 20      # BPF ring buffer size, a power of two >= 4096
    once: bool = False
    netns: list[str] = field(default_factory=list)
    enabled_deserializers: tuple[str, ...] = DEFAULT_DESERIALIZERS
    populate_nsid: bool = True
    # output
    marshal_to: str = "protobufList"
    dest: str = "null"
    topic: str = "xtcp"
    envelope_flush_threshold_rows: int = 10000
    envelope_flush_threshold_bytes: int = 768 * 1024
    capture_path: str = ""
    write_files: int = 10
    kafka_compression: str = ""
    # record metadata
    hostname: str = ""
    location: str = ""
    label: str = ""
    tag: str = ""
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
    debug_level: int = 111

    def __post_init__(self) -> None:
        if not self.hostname:
            self.hostname = socket.gethostname()

    def validate(self) -> "Config":
        from .dest import known_schemes  # late: dest modules import config

        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(name, msg)

        need(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}, not {self.mode!r}")
        need(self.poll_frequency > 0, "poll_frequency", "must be > 0")
        need(self.poll_timeout > 0, "poll_timeout", "must be > 0")
        need(self.poll_timeout <= self.poll_frequency or self.once, "poll_timeout",
             "must not exceed poll_frequency")
        need(self.nl_timeout_milliseconds >= 0, "nl_timeout_milliseconds", "must be >= 0")
        need(self.max_loops >= 0, "max_loops", "must be >= 0")
        need(1 <= self.netlinkers <= 256, "netlinkers", "must be between 1 and 256")
        need(0 <= self.nlmsg_seq < 2**32, "nlmsg_seq", "must fit in uint32")
        need(4096 <= self.packet_size <= 16 * 1024 * 1024, "packet_size", "must be between 4096 and 16 MiB")
        need(self.write_files >= 0, "write_files", "must be >= 0")
        need(self.modulus >= 1, "modulus", "must be >= 1")
        need(0 <= self.poll_jitter_pct <= 100, "poll_jitter_pct", "must be between 0 and 100")
        need(self.reconcile_frequency >= 0, "reconcile_frequency", "must be >= 0")
        need(self.resync_frequency >= 0, "resync_frequency", "must be >= 0")
        rb = self.bpf_ringbuf_bytes
        need(rb >= 4096 and rb & (rb - 1) == 0, "bpf_ringbuf_bytes", "must be a power of two >= 4096")
        need(self.marshal_to in MARSHALLERS, "marshal_to",
             f"unknown marshaller {self.marshal_to!r}; valid: {', '.join(MARSHALLERS)}")
        need(self.envelope_flush_threshold_rows >= 1, "envelope_flush_threshold_rows", "must be >= 1")
        need(self.envelope_flush_threshold_bytes >= 1024, "envelope_flush_threshold_bytes", "must be >= 1024")
        unknown = [d for d in self.enabled_deserializers if d not in ALL_DESERIALIZERS]
        need(not unknown, "enabled_deserializers", f"unknown {', '.join(unknown)}")
        scheme = self.dest.split(":", 1)[0]
        need(scheme in known_schemes(), "dest",
             f"unknown destination scheme {scheme!r}; valid: {', '.join(sorted(known_schemes()))}")
        need(0 <= self.grpc_port < 65536, "grpc_port", "must be 0..65535")
        for name in ("hostname", "location", "label", "tag"):
            need(len(getattr(self, name)) <= 255, name, "longer than 255 characters")
        return self

    def replace(self, **changes: object) -> "Config":
        """A validated copy with `changes` applied; self is untouched if invalid."""
        return dataclasses.replace(self, **changes).validate()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
