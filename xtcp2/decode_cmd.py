"""`xtcp2 decode FILE`: netlink sock_diag pcap -> records (jsonl, protoJson, protoText).

The capture is streamed: packets are read one at a time and decoded a few MiB at a
time, so a capture of any size decodes in bounded memory. A capture cut short (or
damaged) part-way still yields the records of its intact packets; the damage is then
reported on one line and the exit status is 2.
"""
from __future__ import annotations

import json
import sys
from typing import Iterator, TextIO

from .argparse_go import parser as go_parser
from .errors import DecodeError
from .netlink.pcap import read_packets
from .netlink.replay import decode_stream
from .records.convert import record_to_dict
from .records.encode import encode_rows
from .records.envelope import EncodedEnvelope

FORMATS = ("jsonl", "protoJson", "protoText")


def decode_file(path: str) -> Iterator[EncodedEnvelope]:
    """One EncodedEnvelope per decoded chunk of the capture, in file order.

    Raises DecodeError (message starting with `path`) after the envelopes of the
    intact packets when the file is damaged or truncated.
    """
    try:
        for cols in decode_stream(p for _, p in read_packets(path)):
            n = cols.n
            if n:
                body, _ = encode_rows(cols, n)
                yield EncodedEnvelope(body, n)
    except DecodeError as e:
        msg = str(e)
        raise DecodeError(msg if msg.startswith(path) else f"{path}: {msg}") from None


def write_envelope(env: EncodedEnvelope, fmt: str, out: TextIO) -> None:
    if fmt == "protoText":
        from .marshal.proto_text import marshal
        out.write(marshal(env).decode())  # text Envelopes concatenate into one Envelope
        return
    json_names = fmt == "protoJson"
    for rec in env.message().row:
        out.write(json.dumps(record_to_dict(rec, json_names=json_names), separators=(",", ":")) + "\n")


def main(argv) -> int:
    ap = go_parser(prog="xtcp2 decode", description="Decode a netlink sock_diag capture (pcap, link type 253).")
    ap.add_argument("--format", "-format", choices=FORMATS, default="jsonl")
    ap.add_argument("file")
    args = ap.parse_args(argv)
    records = 0
    try:
        for env in decode_file(args.file):
            write_envelope(env, args.format, sys.stdout)
            records += env.rows
    except DecodeError as e:
        sys.stdout.flush()
        raise DecodeError(f"{e}; the {records} records before it were written" if records else str(e)) from None
    return 0
