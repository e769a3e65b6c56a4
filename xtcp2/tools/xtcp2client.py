"""xtcp2client: watch live records and steer a running xtcp2 through its gRPC API.

    xtcp2client                               live records as a table (like ss)
    xtcp2client -format json -count 100       first 100 records as JSON lines (xtcp2's JSON dialect, = jsonl)
    xtcp2client -format csv -columns netns,inetDiagMsgState,tcpInfoRtt   a CSV of chosen fields (humanize, tsv too)
    xtcp2client -poll -pollFrequency 5s       drive polls from the client (PollFlatRecords)
    xtcp2client get                           running config as JSON
    xtcp2client set tag=INC-1 poll_frequency=30s 'enabled_deserializers=info,cong,bbr'
    xtcp2client set -file cfg.json            apply a whole config (as printed by get; - = stdin)
    xtcp2client set-poll-frequency -frequency 30s -timeout 5s
    xtcp2client trigger-poll
    xtcp2client poll-burst -count 6 -interval 10s
    xtcp2client health
    xtcp2client -target unix:/run/xtcp2/grpc.sock get   a daemon on a unix socket
    xtcp2client -target host -tokenFile /etc/xtcp2/token get   a daemon with -grpcTokenFile

The daemon serves root and the users it allows (-grpcAllowUid/-grpcAllowGid); others
get PERMISSION_DENIED. Flags follow upstream's client (-target, -port, -poll, -pollFrequency, -json). Exit
status: 0 ok, 1 the daemon refused or could not be reached (one line on stderr), 2 usage.
"""
from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import os
import signal
import sys
import threading
from typing import Iterator, Sequence, TextIO

import grpc
from google.protobuf import json_format

from ..api.record_filter import METADATA_KEY, TCP_STATES, RecordFilter, parse_state
from ..argparse_go import parse_duration
from ..errors import ConfigError, Xtcp2Error
from ..gen.xtcp_config.v1 import xtcp_config_pb2 as cfg_pb
from ..gen.xtcp_config.v1 import xtcp_config_pb2_grpc as cfg_grpc
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as rec_pb
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2_grpc as rec_grpc
from ..marshal.human import header_name, human_dict, human_row, select_columns
from ..marshal.table import _cell
from ..records.convert import record_to_json
from ..argparse_go import parser as go_parser

CONNECT_TIMEOUT = 5.0
AUTH: tuple = ()  # (("authorization", "Bearer ..."),) with -tokenFile
TLS = None        # (grpc.ChannelCredentials, server name override or None) with -tls


def _md(extra=None):
    """Metadata for a call: the bearer token, if any, plus `extra`."""
    both = tuple(extra or ()) + AUTH
    return both or None


class ClientError(Exception):
    """One-line failure shown to the user."""


def _rpc_error(e: grpc.RpcError, target: str) -> ClientError:
    code = e.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ClientError(f"cannot reach xtcp2 at {target}: {e.details()} (is the daemon running with "
                           f"-grpcPort and --grpc-listen matching?)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ClientError(f"xtcp2 at {target} did not answer in time")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ClientError(f"refused: {e.details()}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return ClientError(f"{code.name}: {e.details()}")
    return ClientError(f"{code.name}: {e.details()}")


def _connect(target: str) -> grpc.Channel:
    if TLS is None:
        ch = grpc.insecure_channel(target)
    else:
        creds, server_name = TLS
        opts = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        ch = grpc.secure_channel(target, creds, options=opts)
    try:
        grpc.channel_ready_future(ch).result(timeout=CONNECT_TIMEOUT)
    except grpc.FutureTimeoutError:
        ch.close()
        raise ClientError(f"cannot reach xtcp2 at {target}: no gRPC server answered within "
                          f"{CONNECT_TIMEOUT:g} s (is the daemon running with this -port?)") from None
    return ch


# ---- record output ---------------------------------------------------------------

def _addr(raw: bytes, port: int) -> str:
    if len(raw) in (4, 16):
        ip = ipaddress.ip_address(raw)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    else:
        host = "*"
    return f"{host}:{port}"


TABLE_HEADER = f"{'NETNS':<16} {'STATE':<11} {'RECV-Q':>6} {'SEND-Q':>6} {'LOCAL':<24} {'PEER':<24} " \
               f"{'RTT_MS':>8} {'CWND':>5} {'RETRANS':>7} {'CONTAINER':<20} PROCESS"


def container_label(r: rec_pb.XtcpFlatRecord) -> str:
    """Container name, else its short id (name not known yet), else "-" (a host socket)."""
    return r.container_name or r.container_id[:12] or "-"


def process_label(r: rec_pb.XtcpFlatRecord) -> str:
    return f"{r.comm or '?'}/{r.pid}" if r.pid else "-"


def table_row(r: rec_pb.XtcpFlatRecord) -> str:
    state = TCP_STATES.get(r.inet_diag_msg_state, str(r.inet_diag_msg_state))
    local = _addr(r.inet_diag_msg_socket_source, r.inet_diag_msg_socket_source_port)
    peer = _addr(r.inet_diag_msg_socket_destination, r.inet_diag_msg_socket_destination_port)
    return (f"{r.netns[:16]:<16} {state:<11} {r.inet_diag_msg_rqueue:>6} {r.inet_diag_msg_wqueue:>6} "
            f"{local:<24} {peer:<24} {r.tcp_info_rtt / 1000:>8.3f} {r.tcp_info_snd_cwnd:>5} "
            f"{r.tcp_info_total_retrans:>7} {container_label(r)[:20]:<20} {process_label(r)}")


FORMATS = ("table", "json", "jsonl", "humanize", "csv", "tsv")


def print_records(records: Iterator[rec_pb.XtcpFlatRecord], fmt: str, count: int, keep: RecordFilter,
                  out: TextIO, columns: str = "") -> int:
    """fmt: table (like ss), json/jsonl (the daemon's JSON dialect), humanize, csv, tsv
    (the daemon's marshallers of the same names, record by record)."""
    shown = 0
    writer = None
    if fmt == "table":
        print(TABLE_HEADER, file=out)
    elif fmt in ("csv", "tsv"):
        cols = select_columns(columns)
        writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        writer.writerow(header_name(fd) for fd in cols)
    for r in records:
        if not keep(r):
            continue
        if fmt in ("json", "jsonl"):
            print(record_to_json(r), file=out)
        elif fmt == "humanize":
            print(json.dumps(human_dict(r), separators=(",", ":")), file=out)
        elif writer is not None:
            writer.writerow(_cell(v) for v in human_row(r, cols))
        else:
            print(table_row(r), file=out)
        out.flush()
        shown += 1
        if count and shown >= count:
            break
    return shown


def _listen(ch: grpc.Channel, timeout: float | None, metadata) -> tuple[Iterator[rec_pb.XtcpFlatRecord], grpc.Future]:
    call = rec_grpc.XTCPFlatRecordServiceStub(ch).FlatRecords(rec_pb.FlatRecordsRequest(), timeout=timeout,
                                                              metadata=_md(metadata))
    return (resp.xtcp_flat_record for resp in call), call


def _poll(ch: grpc.Channel, frequency: float, timeout: float | None, stop: threading.Event, metadata):
    def requests():
        while not stop.is_set():
            yield rec_pb.PollFlatRecordsRequest()
            stop.wait(frequency)

    call = rec_grpc.XTCPFlatRecordServiceStub(ch).PollFlatRecords(requests(), timeout=timeout, metadata=_md(metadata))
    return (resp.xtcp_flat_record for resp in call), call


def cmd_stream(args, target: str) -> int:
    try:
        keep = RecordFilter(args.netns, args.filter_port, parse_state(args.state) if args.state else None)
        select_columns(args.columns)  # an unknown column fails before connecting
    except ConfigError as e:
        raise ClientError(str(e)) from None
    # The daemon filters (less traffic); filtering again here keeps the output right
    # when talking to a daemon that ignores the metadata (upstream's).
    metadata = ((METADATA_KEY, keep.spec()),) if keep else None
    ch = _connect(target)
    stop = threading.Event()
    if args.poll:
        records, call = _poll(ch, args.pollFrequency, args.timeout, stop, metadata)
    else:
        records, call = _listen(ch, args.timeout, metadata)
    try:
        print_records(records, "json" if args.json else args.format, args.count, keep, sys.stdout, args.columns)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # -timeout reached is a normal end
            raise _rpc_error(e, target) from None
    finally:
        stop.set()
        call.cancel()
        ch.close()
    return 0


# ---- config commands -------------------------------------------------------------

def _config_stub(target: str) -> tuple[grpc.Channel, cfg_grpc.ConfigServiceStub]:
    ch = _connect(target)
    return ch, cfg_grpc.ConfigServiceStub(ch)


def _print_config(cfg: cfg_pb.XtcpConfig) -> None:
    print(json_format.MessageToJson(cfg, preserving_proto_field_name=True, indent=2))


def apply_assignment(cfg: cfg_pb.XtcpConfig, assignment: str) -> None:
    """KEY=VALUE onto an XtcpConfig; KEY is the snake_case field name."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    fd = cfg.DESCRIPTOR.fields_by_name.get(key)
    if not sep or fd is None:
        raise ClientError(f"expected FIELD=VALUE with a field of xtcp_config.v1.XtcpConfig, got {assignment!r}")
    if key == "enabled_deserializers":
        wanted = {v.strip() for v in value.split(",") if v.strip()}
        names = set(cfg.enabled_deserializers.enabled) | wanted
        cfg.enabled_deserializers.enabled.clear()
        for n in sorted(names):
            cfg.enabled_deserializers.enabled[n] = n in wanted
        return
    try:
        if fd.message_type is not None and fd.message_type.full_name == "google.protobuf.Duration":
            getattr(cfg, key).FromNanoseconds(round(parse_duration(value) * 1e9))
        elif fd.is_repeated:
            del getattr(cfg, key)[:]
            getattr(cfg, key).extend(v for v in value.split(",") if v)
        elif fd.type == fd.TYPE_BOOL:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            setattr(cfg, key, value.lower() in ("true", "1"))
        elif fd.type == fd.TYPE_STRING:
            setattr(cfg, key, value)
        else:
            n = int(value)
            if n < 0:
                raise ValueError("must not be negative")
            setattr(cfg, key, n)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
        raise ClientError(f"{key}: {e}") from None


def cmd_get(args, target: str) -> int:
    ch, stub = _config_stub(target)
    with ch:
        _print_config(stub.Get(cfg_pb.GetRequest(), timeout=10, metadata=_md()).config)
    return 0


def cmd_set(args, target: str) -> int:
    ch, stub = _config_stub(target)
    with ch:
        if args.file:
            text = sys.stdin.read() if args.file == "-" else open(args.file).read()
            try:
                data = json.loads(text)
                cfg = json_format.ParseDict(data.get("config", data), cfg_pb.XtcpConfig())
            except (ValueError, json_format.ParseError) as e:
                raise ClientError(f"{args.file}: not an XtcpConfig in JSON: {e}") from None
        else:
            if not args.assignments:
                raise ClientError("nothing to set: give FIELD=VALUE pairs or -file")
            cfg = stub.Get(cfg_pb.GetRequest(), timeout=10, metadata=_md()).config
        for a in args.assignments:
            apply_assignment(cfg, a)
        _print_config(stub.Set(cfg_pb.SetRequest(config=cfg), timeout=30, metadata=_md()).config)
    return 0


def _duration_pb(seconds: float):
    from google.protobuf import duration_pb2

    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def cmd_set_poll_frequency(args, target: str) -> int:
    ch, stub = _config_stub(target)
    with ch:
        resp = stub.SetPollFrequency(cfg_pb.SetPollFrequencyRequest(
            poll_frequency=_duration_pb(args.frequency), poll_timeout=_duration_pb(args.timeout)), timeout=30, metadata=_md())
        _print_config(resp.config)
    return 0


def cmd_trigger_poll(args, target: str) -> int:
    ch, stub = _config_stub(target)
    with ch:
        stub.TriggerPoll(cfg_pb.TriggerPollRequest(), timeout=10, metadata=_md())
    print("poll triggered")
    return 0


def cmd_poll_burst(args, target: str) -> int:
    ch, stub = _config_stub(target)
    with ch:
        resp = stub.TriggerPollBurst(cfg_pb.TriggerPollBurstRequest(
            count=args.count, interval=_duration_pb(args.interval)), timeout=10, metadata=_md())
    print(f"burst scheduled: {resp.count} polls {resp.interval.ToTimedelta().total_seconds():g} s apart")
    return 0


def cmd_health(args, target: str) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ch = _connect(target)
    with ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
    print(name)
    return 0 if status.status == health_pb2.HealthCheckResponse.SERVING else 1


COMMANDS = {
    None: cmd_stream, "get": cmd_get, "set": cmd_set, "set-poll-frequency": cmd_set_poll_frequency,
    "trigger-poll": cmd_trigger_poll, "poll-burst": cmd_poll_burst, "health": cmd_health,
}


def _duration_arg(text: str) -> float:
    return parse_duration(text)


def build_parser() -> argparse.ArgumentParser:
    p = go_parser(prog="xtcp2client", allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-target", "--target", default="127.0.0.1",
                   help="daemon host, or unix:/PATH for a unix socket listener (default 127.0.0.1)")
    p.add_argument("-port", "--port", type=int, default=8889, help="daemon -grpcPort (default 8889)")
    p.add_argument("-tokenFile", "--token-file", dest="tokenFile", default=None,
                   help="send the bearer token in this file (daemons with -grpcTokenFile); "
                        "else $XTCP2_GRPC_TOKEN if set")
    p.add_argument("-tls", "--tls", action="store_true", help="connect with TLS (daemons with -grpcTlsCert)")
    p.add_argument("-tlsCa", "--tls-ca", dest="tlsCa", default=None,
                   help="with -tls: trust this PEM CA instead of the system's (implies -tls)")
    p.add_argument("-tlsCert", "--tls-cert", dest="tlsCert", default=None,
                   help="client certificate for daemons with -grpcTlsClientCa (implies -tls)")
    p.add_argument("-tlsKey", "--tls-key", dest="tlsKey", default=None, help="private key of -tlsCert")
    p.add_argument("-tlsServerName", "--tls-server-name", dest="tlsServerName", default=None,
                   help="name to check the daemon's certificate against (default: -target)")
    p.add_argument("-format", "--format", choices=FORMATS, default="table",
                   help="live record output: table (like ss), json = jsonl (one record per line, the daemon's "
                        "JSON dialect), humanize (JSON lines with state names, text addresses, RTT in ms), "
                        "csv, tsv (human values, header first)")
    p.add_argument("-json", "--json", action="store_true", help="same as -format json")
    p.add_argument("-columns", "--columns", default="",
                   help="csv/tsv: comma-separated XtcpFlatRecord json field names (e.g. netns,inetDiagMsgState,"
                        "tcpInfoRtt); empty = all")
    p.add_argument("-poll", "--poll", action="store_true", help="trigger polls from the client (PollFlatRecords)")
    p.add_argument("-pollFrequency", "--poll-frequency", dest="pollFrequency", type=_duration_arg, default=10.0,
                   help="with -poll: request a poll this often (default 10s)")
    p.add_argument("-count", "--count", type=int, default=0, help="stop after this many records (0 = never)")
    p.add_argument("-timeout", "--timeout", type=_duration_arg, default=None,
                   help="stop streaming after this long (e.g. 30s)")
    p.add_argument("-netns", "--netns", default=None, help="only records of this namespace name")
    p.add_argument("-filterPort", "--filter-port", dest="filter_port", type=int, default=None,
                   help="only sockets with this local or peer port")
    p.add_argument("-state", "--state", default=None, help="only sockets in this state (established, listen, ...)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.add_parser("get", help="print the running config as JSON")
    s = sub.add_parser("set", help="change config: FIELD=VALUE ... or -file cfg.json")
    s.add_argument("-file", "--file", default=None, help="whole XtcpConfig as JSON (- = stdin)")
    s.add_argument("assignments", nargs="*", metavar="FIELD=VALUE")
    f = sub.add_parser("set-poll-frequency", help="change poll frequency and timeout")
    f.add_argument("-frequency", "--frequency", type=_duration_arg, required=True)
    f.add_argument("-timeout", "--timeout", type=_duration_arg, required=True)
    sub.add_parser("trigger-poll", help="one poll now")
    b = sub.add_parser("poll-burst", help="COUNT polls INTERVAL apart")
    b.add_argument("-count", "--count", type=int, required=True)
    b.add_argument("-interval", "--interval", type=_duration_arg, required=True)
    sub.add_parser("health", help="standard gRPC health check")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    host = args.target
    if host.startswith("unix:"):
        target = host
    else:
        target = f"[{host}]:{args.port}" if ":" in host and not host.startswith("[") else f"{host}:{args.port}"
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `xtcp2client | head` ends quietly
    try:
        if args.tls or args.tlsCa or args.tlsCert or args.tlsKey:
            global TLS
            from ..api.grpc_tls import channel_credentials
            TLS = (channel_credentials(args.tlsCa, args.tlsCert, args.tlsKey), args.tlsServerName)
        token = os.environ.get("XTCP2_GRPC_TOKEN", "").strip()
        if args.tokenFile:
            with open(args.tokenFile) as f:
                token = f.read().strip()
        if token:
            global AUTH
            AUTH = (("authorization", f"Bearer {token}"),)
        return COMMANDS[args.cmd](args, target)
    except (ClientError, Xtcp2Error) as e:
        print(f"xtcp2client: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"xtcp2client: {_rpc_error(e, target)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"xtcp2client: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
