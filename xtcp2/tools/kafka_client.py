"""xtcp2_kafka_client: read the xtcp topic and print the records it carries.

Every Kafka message is one protobufList blob: varint(len) + Envelope. This decodes
them with the project's own decoder and prints each row.

    xtcp2_kafka_client --brokers 127.0.0.1:9092 --topic xtcp --format table
    xtcp2_kafka_client --format protoJson --max-messages 10 --timeout 5
"""
from __future__ import annotations

import ipaddress
import sys
import time

from google.protobuf import json_format

from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..marshal.protobuf_list import unmarshal
from ..argparse_go import parser as go_parser

TABLE_COLUMNS = ("timestamp_ns", "hostname", "netns", "source", "destination", "state", "rtt_us", "cwnd",
                 "bytes_acked", "cc")


def decode_message(value: bytes) -> list[pb.XtcpFlatRecord]:
    """One Kafka message -> its rows. Raises ValueError on anything malformed."""
    rows = []
    for body in unmarshal(value):
        try:
            rows.extend(pb.Envelope.FromString(body).row)
        except Exception as e:  # protobuf's DecodeError
            raise ValueError(f"not an Envelope: {e}") from None
    return rows


def _addr(raw: bytes, port: int) -> str:
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return f"{raw.hex()}:{port}"
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def table_row(r: pb.XtcpFlatRecord) -> tuple:
    return (r.timestamp_ns, r.hostname, r.netns,
            _addr(r.inet_diag_msg_socket_source, r.inet_diag_msg_socket_source_port),
            _addr(r.inet_diag_msg_socket_destination, r.inet_diag_msg_socket_destination_port),
            r.inet_diag_msg_state, r.tcp_info_rtt, r.tcp_info_snd_cwnd, r.tcp_info_bytes_acked,
            r.congestion_algorithm_string)


def format_row(r: pb.XtcpFlatRecord, fmt: str) -> str:
    if fmt == "protoJson":
        return json_format.MessageToJson(r, indent=None, preserving_proto_field_name=True)
    return "\t".join(str(v) for v in table_row(r))


def main(argv: list[str] | None = None) -> int:
    ap = go_parser(prog="xtcp2_kafka_client", description=__doc__.split("\n")[0])
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="xtcp")
    ap.add_argument("--format", choices=("protoJson", "table", "count"), default="table")
    ap.add_argument("--group", default="", help="consume as this group (commits); default: read every partition from the start")
    ap.add_argument("--max-messages", type=int, default=0, help="stop after this many Kafka messages (0: never)")
    ap.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)")
    a = ap.parse_args(argv)
    try:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
    except ImportError:
        print("xtcp2_kafka_client: needs confluent-kafka (pip install 'xtcp2[kafka]')", file=sys.stderr)
        return 2
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": a.group or "xtcp2_kafka_client",
                  "enable.auto.commit": bool(a.group), "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    try:
        md = c.list_topics(a.topic, timeout=5)
    except KafkaException as e:
        print(f"xtcp2_kafka_client: broker {a.brokers} unreachable: {e.args[0].str()}", file=sys.stderr)
        return 1
    t = md.topics.get(a.topic)
    if t is None or t.error is not None or not t.partitions:
        print(f"xtcp2_kafka_client: topic {a.topic!r} not found on {a.brokers}", file=sys.stderr)
        return 1
    if a.group:
        c.subscribe([a.topic])
    else:
        c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in t.partitions])
    out = sys.stdout
    if a.format == "table":
        out.write("\t".join(TABLE_COLUMNS) + "\n")
    msgs = rows = bad = 0
    idle_since = time.monotonic()
    try:
        while not a.max_messages or msgs < a.max_messages:
            m = c.poll(0.5)
            if m is None or m.error():
                if a.timeout and time.monotonic() - idle_since > a.timeout:
                    break
                continue
            idle_since = time.monotonic()
            msgs += 1
            try:
                decoded = decode_message(m.value() or b"")
            except ValueError as e:
                bad += 1
                print(f"xtcp2_kafka_client: partition {m.partition()} offset {m.offset()}: {e}", file=sys.stderr)
                continue
            rows += len(decoded)
            if a.format != "count":
                for r in decoded:
                    out.write(format_row(r, a.format) + "\n")
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        return 0
    finally:
        c.close()
    if a.format == "count":
        out.write(f"{msgs} messages, {rows} records, {bad} undecodable\n")
    out.flush()
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
