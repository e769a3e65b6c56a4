"""Command line: upstream's Go-style flags (-frequency 10s; --frequency works too).

    xtcp2 [flags]                  run the daemon
    xtcp2 decode [--format F] PCAP decode a netlink capture to records
    xtcp2 top [FILTER]             live full-screen view of connections

Every flag can also come from the environment (xtcp2/config_sources.py: upstream's
variable names, and XTCP_CONFIG_JSON); flags win over variables, variables over defaults.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Sequence

from . import __version__
from .config import COLLECTORS, FIELDS, MARSHALLERS, MODES, Config, parse_deserializers
from .dest import known_schemes
from .errors import ConfigError, Xtcp2Error
from .argparse_go import parse_duration
from .argparse_go import parser as go_parser
from .config_sources import Layers, Option, from_environment

log = logging.getLogger("xtcp2")


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("1", "true", "t", "yes"):
        return True
    if t in ("0", "false", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def _csv(text: str) -> list[str]:
    """Go's comma list ("eth0, eth1"); empty items dropped."""
    return [p.strip() for p in text.split(",") if p.strip()]


# (flag, Config field, type, help)
FLAGS = [
    ("frequency", "poll_frequency", parse_duration, "poll frequency (Go duration, e.g. 10s)"),
    ("timeout", "poll_timeout", parse_duration, "poll timeout per namespace"),
    ("nltimeout", "nl_timeout_milliseconds", int, "netlink socket timeout in milliseconds, 0 = none"),
    ("maxLoops", "max_loops", int, "stop after this many polls, 0 = forever"),
    ("netlinkers", "netlinkers", int, "parallel netlink readers (namespaces dumped at once)"),
    ("packetSize", "packet_size", int, "netlink recv window in bytes"),
    ("modulus", "modulus", int, "report every Nth socket"),
    ("pollJitterPct", "poll_jitter_pct", int, "poll schedule jitter, percent of -frequency"),
    ("reconcileFrequency", "reconcile_frequency", parse_duration, "namespace reconcile period when not reconciling before every poll"),
    ("reconcileBeforePoll", "reconcile_before_poll", _bool, "reconcile namespaces before every poll"),
    ("resync", "resync_frequency", parse_duration, "bpf mode: full resync period (default 10x -frequency)"),
    ("bpfRingbufBytes", "bpf_ringbuf_bytes", int, "bpf mode: ring buffer size in bytes (power of two)"),
    ("bpfRefresh", "bpf_refresh_frequency", parse_duration, "bpf mode: re-read live sockets this often, 0 = never (default: -frequency)"),
    ("bpfCoalesceWindow", "bpf_coalesce_window", parse_duration, "bpf mode: opens in one namespace wait this long to share one read"),
    ("bpfCloseWait", "bpf_close_wait", parse_duration, "bpf mode: hold close records this long so the kernel's destroy broadcast is the record"),
    ("populateNsid", "populate_nsid", _bool, "fill nsid from rtnetlink"),
    ("marshal", "marshal_to", str, f"wire format: {', '.join(MARSHALLERS)}"),
    ("dest", "dest", str, f"destination scheme:address, scheme one of {', '.join(sorted(known_schemes()))}"),
    ("topic", "topic", str, "Kafka / NSQ topic"),
    ("envelopeFlushRows", "envelope_flush_threshold_rows", int, "max records per envelope"),
    ("envelopeFlushBytes", "envelope_flush_threshold_bytes", int, "max envelope size in bytes"),
    ("columns", "csv_columns", str, "csv/tsv: comma-separated XtcpFlatRecord json field names (e.g. hostname,inetDiagMsgState,tcpInfoRtt); empty = all"),
    ("kafkaCompression", "kafka_compression", str, "kafka compression codec"),
    ("produceTimeout", "kafka_produce_timeout", parse_duration, "produce / POST timeout per request (kafka, http), 0 = the destination's default"),
    ("kafkaSchemaUrl", "kafka_schema_url", str, "kafka: register -xtcpProtoFile with this Confluent-compatible schema registry at start"),
    ("xtcpProtoFile", "xtcp_proto_file", str, "the .proto registered with -kafkaSchemaUrl (default: the packaged xtcp_flat_record.proto)"),
    ("s3Endpoint", "s3_endpoint", str, "s3parquet: S3 endpoint URL (else S3_ENDPOINT, or the address after s3parquet:)"),
    ("s3Bucket", "s3_bucket", str, "s3parquet: bucket, must exist (else S3_BUCKET)"),
    ("s3Prefix", "s3_prefix", str, "s3parquet: key prefix before host=/date=/hour= (else S3_PREFIX)"),
    ("s3Region", "s3_region", str, "s3parquet: region (else S3_REGION, else us-east-1)"),
    ("s3SkipBucketProbe", "s3_skip_bucket_probe", _bool, "s3parquet: skip the start-up HeadBucket (write-only credentials; else S3_SKIP_BUCKET_PROBE)"),
    ("s3ParquetFlushBytes", "s3_parquet_flush_threshold_bytes", int, "s3parquet: upload an object at this many bytes of input, 0 = 63 MiB (else S3_PARQUET_FLUSH_BYTES)"),
    ("s3FlushInterval", "s3_flush_interval", parse_duration, "s3parquet: upload at least this often, 0 = max(-frequency, 30m)"),
    ("s3FlushJitterPct", "s3_flush_jitter_pct", int, "s3parquet: jitter of -s3FlushInterval in percent"),
    ("s3FlushThresholdJitterPct", "s3_flush_threshold_jitter_pct", int, "s3parquet: per-object downward jitter of -s3ParquetFlushBytes in percent"),
    ("s3UploadMaxAttempts", "s3_upload_max_attempts", int, "s3parquet: upload attempts before an object is dropped, 0 = 10"),
    ("s3UploadBackoffCap", "s3_upload_backoff_cap", parse_duration, "s3parquet: cap of one retry's full-jitter back-off, 0 = clamp(-frequency/10, 1s, 1h)"),
    ("capturePath", "capture_path", str, "write raw netlink replies as pcap files into this directory"),
    ("writeFiles", "write_files", int, "how many pcap files -capturePath writes"),
    ("hostname", "hostname", str, "hostname stamped on records"),
    ("location", "location", str, "location stamped on records"),
    ("label", "label", str, "label stamped on records"),
    ("tag", "tag", str, "tag stamped on records"),
    ("enrichNic", "enrich_nic_enable", _bool, "stamp uplink*_nic_* (driver, model, PCI ids, speed, firmware) from sysfs + ethtool"),
    ("enrichLldp", "enrich_lldp_enable", _bool, "stamp uplink*_lldp_* (switch, port, mgmt address) from lldpd"),
    ("lldpdSocket", "lldpd_socket_path", str, "lldpd control socket for -enrichLldp"),
    ("lldpdVersionHint", "lldpd_version_hint", str, "accepted for upstream compatibility; unused (lldpcli matches lldpd)"),
    ("uplinkCount", "uplink_count", int, "uplink slots to fill, at most 2"),
    ("uplinkInterfaces", "uplink_interfaces", _csv, "comma-separated uplinks in slot order (default: interfaces of the default routes)"),
    ("promListen", "prom_listen", str, "Prometheus listen address"),
    ("promPath", "prom_path", str, "Prometheus path"),
    ("grpcPort", "grpc_port", int, "gRPC port"),
    ("metricsMaxNetns", "metrics_max_netns", int, "TCP metrics: at most this many namespaces get their own labels, the rest netns=\"other\""),
    ("grpcAllowUid", "grpc_allow_uid", str, "besides root, these uids/user names may use the gRPC API (comma list)"),
    ("grpcAllowGid", "grpc_allow_gid", str, "besides root, members of these gids/groups may use the gRPC API"),
    ("grpcTokenFile", "grpc_token_file", str, "bearer token file (mode 0600); required for a non-loopback -grpcListen"),
    ("fileDestDir", "file_dest_dir", str, "gRPC Set may point file/unix destinations and capture_path only inside this directory"),
    ("grpcTlsCert", "grpc_tls_cert", str, "PEM certificate (chain) file: serve gRPC over TLS (with -grpcTlsKey)"),
    ("grpcTlsKey", "grpc_tls_key", str, "PEM private key file of -grpcTlsCert (mode 0600)"),
    ("grpcTlsClientCa", "grpc_tls_client_ca", str, "PEM CA file: gRPC clients must present a certificate it signed (mTLS)"),
    ("livenessTimeout", "liveness_timeout", parse_duration, "/healthz fails when the collection loop has not run for this long; 0 = max(60s, 3 x -frequency)"),
    ("webConfigFile", "web_config_file", str, "metrics listener TLS, client certificates and basic auth: a Prometheus exporter-toolkit web config (YAML)"),
    ("pyroscopeUrl", "pyroscope_url", str, "push CPU profiles to this Pyroscope server (needs the pyroscope-io extra); empty = off"),
    ("pyroscopeAppName", "pyroscope_app_name", str, "application name registered with Pyroscope"),
    ("pyroscopeSampleHz", "pyroscope_sample_hz", int, "Pyroscope CPU sampling rate in Hz, 0 = 100"),
    ("pyroscopeUploadSec", "pyroscope_upload_interval_sec", int, "seconds between Pyroscope uploads, 0 = 15"),
    ("d", "debug_level", int, "debug level"),
    ("dockerSocket", "docker_socket_path", str, "Docker Engine API unix socket for -enrichContainer (podman's compatible socket works too)"),
    ("resolveProcess", "resolve_process", _bool, "pid and comm of the process holding each socket (from /proc, as ss -p)"),
    ("resolveContainerId", "resolve_container_id", _bool, "container id and runtime of each socket, from its cgroup"),
    ("enrichContainer", "enrich_container_enable", _bool, "container name, image and Kubernetes pod from the Docker Engine API (-dockerSocket); best-effort"),
]


def build_parser() -> argparse.ArgumentParser:
    p = go_parser(prog="xtcp2", allow_abbrev=False, description=DESCRIPTION)
    defaults = Config()
    for flag, field, typ, help_ in FLAGS:
        default = getattr(defaults, field)
        bare = {"nargs": "?", "const": True} if typ is _bool else {}  # Go: a bare -flag means true
        p.add_argument(f"-{flag}", f"--{flag}", dest=field, type=typ, default=None, **bare,
                       help=help_ if default is None else f"{help_} (default {default!r})")
    p.add_argument("-deserializers", "--deserializers", default=None,
                   help="attribute decoders: default, all, '' or a comma list")
    p.add_argument("--mode", "-mode", choices=MODES, default=None, help="poll, bpf or auto (default auto: bpf when its programs load here, else poll)")
    p.add_argument("--collector", "-collector", choices=COLLECTORS, default=None,
                   help="how sockets are read: iter (BPF TCP iterator), netlink (inet_diag) or auto "
                        "(default: iter where it loads, else netlink)")
    p.add_argument("--once", "-once", action="store_true", help="one poll of the selected namespaces, then exit")
    p.add_argument("--netns", "-netns", action="append", default=None, metavar="NAME",
                   help="only this namespace (repeatable; 'self' = our own)")
    p.add_argument("--grpc-listen", "-grpcListen", dest="grpc_listen", default=None, help="gRPC bind address")
    p.add_argument("-logLevel", "--logLevel", dest="log_level", type=_log_level, default=None,
                   help="debug, info, warning or error (default: from -d)")
    p.add_argument("-logFormat", "--logFormat", dest="log_format", type=_log_format, default=None,
                   help="text or json (one object per line) (default 'text')")
    p.add_argument("-healthcheck", "--healthcheck", action="store_true",
                   help="ask the running daemon's /healthz and /readyz (at -promListen); exit 0 if both pass, else 1")
    p.add_argument("-v", "--version", action="store_true", help="show version and exit")
    p.add_argument("-conf", "--conf", action="store_true",
                   help="show the effective config, and where each value came from, and exit")
    return p


DESCRIPTION = """Per-socket TCP telemetry for every network namespace.

commands:
  xtcp2 [flags]                   run the daemon (this help)
  xtcp2 decode [--format F] PCAP  decode a -capturePath pcap back to records (xtcp2 decode -help)
  xtcp2 top [FILTER]              live full-screen view of connections (xtcp2 top -help)

Every flag can also be set in the environment, under upstream's variable names
(-frequency: POLL_FREQUENCY, -dest: DEST, -hostname: XTCP_HOSTNAME, ...; flags upstream
lacks: XTCP_ + the flag in upper snake case, -bpfRefresh: XTCP_BPF_REFRESH), or as an
XtcpConfig in protojson in XTCP_CONFIG_JSON. Flags win over variables, variables over
XTCP_CONFIG_JSON, and that over the defaults; -conf shows where each value came from."""

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"invalid log level {text!r} (debug, info, warning, error)")
    return text.lower()


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise argparse.ArgumentTypeError(f"invalid log format {text!r} (text, json)")
    return text


def _mode(text: str) -> str:
    if text not in MODES:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(MODES)})")
    return text


def _collector(text: str) -> str:
    if text not in COLLECTORS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(COLLECTORS)})")
    return text


def _name_list(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def options() -> list[Option]:
    """Everything settable by flag, variable or XTCP_CONFIG_JSON (not the one-shot actions)."""
    opts = [Option(flag, field, typ) for flag, field, typ, _ in FLAGS]
    opts += [Option("deserializers", "enabled_deserializers", parse_deserializers),
             Option("mode", "mode", _mode),
             Option("collector", "collector", _collector),
             Option("netns", "netns", _name_list),     # XTCP_NETNS=ns1,ns2
             Option("grpcListen", "grpc_listen", str),
             Option("logLevel", "log_level", _log_level),
             Option("logFormat", "log_format", _log_format)]
    return opts


def _flag_layer(args: argparse.Namespace) -> Layers:
    out = Layers()
    for opt in options():
        attr = "deserializers" if opt.dest == "enabled_deserializers" else opt.dest
        value = getattr(args, attr)
        if value is None:
            continue
        if attr == "deserializers":
            value = parse_deserializers(value)
        out.put(opt.dest, value, f"flag -{opt.flag}")
    return out


def resolve(args: argparse.Namespace, environ=None) -> tuple[Config, Layers]:
    """The validated Config (flags > environment > XTCP_CONFIG_JSON > defaults) and the
    layer holding every explicitly given value (log settings included) with its source."""
    given = from_environment(options(), os.environ if environ is None else environ, _config_json)
    flags = _flag_layer(args)
    given.values.update(flags.values)
    given.sources.update(flags.sources)
    changes = {k: v for k, v in given.values.items() if k in FIELDS}
    changes["once"] = args.once
    if "poll_timeout" not in changes and changes.get("poll_frequency", Config.poll_timeout) < Config.poll_timeout:
        changes["poll_timeout"] = changes["poll_frequency"]  # a short -frequency implies a short timeout
        given.sources["poll_timeout"] = given.sources["poll_frequency"]
    try:
        return Config(**changes).validate(), given
    except ConfigError as e:
        where = given.sources.get(e.field, "")
        if where.startswith("flag") or not where:
            raise
        raise Xtcp2Error(f"{e.field} (from {where}): {e.message}") from None


def _config_json(text: str) -> dict:
    """XTCP_CONFIG_JSON, parsed by the protobuf runtime: imported only when it is set."""
    from .api.config_json import config_json
    return config_json(text)


def config_from_args(args: argparse.Namespace, environ=None) -> Config:
    return resolve(args, environ)[0]


def describe(cfg: Config, given: Layers) -> dict:
    """-conf: the effective config, plus where each value came from."""
    out = cfg.as_dict()
    out["sources"] = {name: given.sources.get(name, "default") for name in out}
    out["sources"].pop("once", None)
    for extra in ("log_level", "log_format"):
        if extra in given.values:
            out[extra] = given.values[extra]
            out["sources"][extra] = given.sources[extra]
    return out


def setup_logging(debug_level: int, level: str | None = None, fmt: str = "text") -> None:
    """-logLevel wins; without it upstream's -d picks the level (>= 1000 debug, >= 10 info)."""
    if level is not None:
        lvl = LOG_LEVELS[level]
    else:
        lvl = logging.DEBUG if debug_level >= 1000 else logging.INFO if debug_level >= 10 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from .logfmt import JsonFormatter
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=lvl, handlers=[handler], force=True)


def run_daemon(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"xtcp2 {__version__}")
        return 0
    cfg, given = resolve(args)
    if args.conf:
        import json
        print(json.dumps(describe(cfg, given), indent=2, default=list))
        return 0
    if args.healthcheck:
        from .api.health import healthcheck
        ok, line = healthcheck(cfg.prom_listen, web_config_file=cfg.web_config_file)
        print(f"xtcp2: {line}", file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    setup_logging(cfg.debug_level, given.values.get("log_level"), given.values.get("log_format", "text"))
    bpf_program = None
    if cfg.once and cfg.collector == "auto":
        cfg = _once_collector(cfg)
    if not cfg.once:
        from .ebpf import load_for_mode
        # --mode bpf that cannot run: Xtcp2Error, one line
        bpf_program, why = load_for_mode(cfg.mode, cfg.bpf_ringbuf_bytes)
        log.info("%s", why)
    from .api.control_plane import preflight, start_control_plane
    from .daemon import Daemon
    preflight(cfg)  # exits 2 with what is missing and how to grant it
    from .api.pyroscope_push import start_pyroscope
    stop_pyroscope = start_pyroscope(cfg)  # before the daemon: start-up is profiled too
    try:
        daemon = Daemon(cfg, use_bpf=bpf_program is not None, bpf_program=bpf_program)
    except BaseException:
        if bpf_program is not None:
            bpf_program.close()
        if stop_pyroscope is not None:
            stop_pyroscope()
        raise
    plane = notifier = losses = None
    one_shot_rc: int | None = None
    try:
        if cfg.once:
            stats = daemon.poll_once()
            print(f"xtcp2: {stats.summary()}", file=sys.stderr)
            missing = daemon.table.unmatched
            if missing:  # the poll ran, but not over what was asked for
                print(f"xtcp2: --netns {', '.join(missing)}: no such network namespace", file=sys.stderr)
            one_shot_rc = 2 if missing else 0
            return one_shot_rc
        _handle_signals(daemon, cfg)
        plane = start_control_plane(daemon, cfg)
        from .api.health import Health, SystemdNotifier, liveness_timeout
        notifier = SystemdNotifier(Health(daemon, liveness_timeout(cfg)))
        notifier.start()  # only under systemd (NOTIFY_SOCKET)
        from .api.loss_log import LossReporter
        losses = LossReporter(_loss_interval(os.environ.get("XTCP2_LOSS_LOG_INTERVAL", "")))
        losses.start()
        if bpf_program is not None:
            log.info("xtcp2 %s: bpf events, refresh every %.3gs, to %s as %s", __version__, cfg.poll_frequency,
                     cfg.dest, cfg.marshal_to)
        else:
            log.info("xtcp2 %s: polling every %.3gs to %s as %s", __version__, cfg.poll_frequency, cfg.dest,
                     cfg.marshal_to)
        daemon.run()
        return 0
    finally:
        if losses is not None:
            losses.stop()
        if notifier is not None:
            notifier.stop()
        _shut_down(daemon, plane)
        if stop_pyroscope is not None:
            stop_pyroscope()
        if one_shot_rc is not None:
            global _one_shot_done
            _one_shot_done = True


_one_shot_done = False   # a --once run finished and closed everything: entry() may leave at once


def entry() -> None:
    """The process's entry point (the `xtcp2` script, `python -m xtcp2`); main() is the
    same without leaving the process."""
    rc = main()
    if _one_shot_done:
        _exit_now(rc)
    sys.exit(rc)


def _exit_now(rc: int) -> None:
    """A one-shot run is done and its destination closed: leave without the interpreter's
    teardown of every module (~15 ms here, most of it numpy's), when no other thread could
    still be writing. atexit handlers (logging's flush, coverage) run as on a normal exit."""
    import atexit
    import threading

    if threading.active_count() != 1:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


# --once with -collector auto: loading the BPF iterator (open, BTF relocation, verifier)
# costs 0.12-0.19 s once, and it then walks each namespace ~1.5 us per host socket
# faster than inet_diag (0.8 against 2.3-2.6 us): it pays from ~100,000 socket-walks.
# A daemon loads it once for good; a one-shot run takes it only on a big host.
ONCE_ITER_MIN_SOCKETS = 50_000


def _once_collector(cfg: Config) -> Config:
    """-collector auto for one poll: netlink unless the host holds enough sockets."""
    from .netns.sockstat import tcp_sockets_allocated, walked_sockets
    try:
        # our own namespace alone: its table; any other: the host's (the most a walk visits)
        own = bool(cfg.netns) and set(cfg.netns) <= {"self", "default"}
        walked = walked_sockets() if own else tcp_sockets_allocated()
    except (OSError, ValueError):
        walked = ONCE_ITER_MIN_SOCKETS  # cannot tell: as a daemon would
    if walked >= ONCE_ITER_MIN_SOCKETS:
        return cfg
    # debug: the collector's own line (info) says which runs, after the destination opened
    log.debug("collector auto (--once): netlink; a walk visits %d TCP sockets, under the %d that pay for "
              "loading the BPF iterator", walked, ONCE_ITER_MIN_SOCKETS)
    return cfg.copy(collector="netlink")


def _loss_interval(text: str) -> float:
    """Seconds between loss reports: 10, or XTCP2_LOSS_LOG_INTERVAL (tests) within 0.1..3600."""
    try:
        return min(3600.0, max(0.1, float(text)))
    except ValueError:
        return 10.0


def _handle_signals(daemon, startup: Config) -> None:
    """SIGTERM / SIGINT stop the daemon (the destination drains within its flushTimeout).
    SIGHUP reloads the configuration it was started with, undoing changes made over gRPC;
    queued records are kept (the destination is only reopened if its address changed)."""

    def reload() -> None:
        try:
            daemon.reconfigure(startup)
            log.info("SIGHUP: configuration reloaded from the command line")
        except Exception as e:  # noqa: BLE001 - a failed reload must not take the daemon down
            log.warning("SIGHUP: reload failed, configuration unchanged: %s", e)

    import signal  # a one-shot run installs no handlers
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    # the handler runs on the main thread, possibly inside a lock reconfigure() needs
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload, name="xtcp2-sighup").start())


def _shut_down(daemon, plane) -> None:
    """Stop the API listeners and drain the destination at the same time, so shutdown
    takes the destination's flushTimeout, not that plus the gRPC grace period."""
    stopper = None
    if plane is not None:
        stopper = threading.Thread(target=plane.stop, name="xtcp2-plane-stop")
        stopper.start()
    try:
        daemon.close()
    finally:
        if stopper is not None:
            stopper.join()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # numpy's OpenBLAS starts a thread per core when numpy is imported (later, by the
    # collector's modules); xtcp2 does no linear algebra, and those threads cost a
    # one-shot run ~0.09 s of CPU here. An operator's own setting is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        if argv and argv[0] == "decode":
            from .decode_cmd import main as decode_main
            return decode_main(argv[1:])
        if argv and argv[0] == "top":
            from .ui.top import main as top_main
            return top_main(argv[1:])
        return run_daemon(argv)
    except Xtcp2Error as e:
        print(f"xtcp2: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
