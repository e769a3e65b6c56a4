"""`xtcp2 decode FILE`: netlink sock_diag pcap -> records (jsonl, protoJson, protoText)."""
from __future__ import annotations

import json
import sys

from .errors import DecodeError
from .netlink.pcap import read_packets
from .netlink.replay import decode_packets
from .records.convert import record_to_dict
from .records.encode import encode_rows
from .records.envelope import EncodedEnvelope
from .argparse_go import parser as go_parser

FORMATS = ("jsonl", "protoJson", "protoText")


def decode_file(path: str) -> EncodedEnvelope:
    try:
        cols = decode_packets(p for _, p in read_packets(path))
    except DecodeError as e:
        msg = str(e)
        raise DecodeError(msg if msg.startswith(path) else f"{path}: {msg}") from None
    n = cols.pop("_n")
    body, _ = encode_rows(cols, n) if n else (b"", None)
    return EncodedEnvelope(body, n)


def main(argv) -> int:
    ap = go_parser(prog="xtcp2 decode", description="Decode a netlink sock_diag capture (pcap, link type 253).")
    ap.add_argument("--format", "-format", choices=FORMATS, default="jsonl")
    ap.add_argument("file")
    args = ap.parse_args(argv)
    env = decode_file(args.file)
    out = sys.stdout
    if args.format == "protoText":
        from .marshal.proto_text import marshal
        out.write(marshal(env).decode())
    else:
        json_names = args.format == "protoJson"
        for rec in env.message().row:
            out.write(json.dumps(record_to_dict(rec, json_names=json_names), separators=(",", ":")) + "\n")
    return 0
