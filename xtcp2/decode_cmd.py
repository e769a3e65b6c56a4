"""`xtcp2 decode FILE`: netlink sock_diag pcap -> records in any text format of the daemon
(jsonl = protoJson, the JSON dialect of README; protoText; humanize, csv, tsv).

The capture is streamed: packets are read one at a time and decoded a few MiB at a
time, so a capture of any size decodes in bounded memory. A capture cut short (or
damaged) part-way still yields the records of its intact packets; the damage is then
reported on one line and the exit status is 2.
"""
from __future__ import annotations

import sys
from typing import Callable, Iterator, TextIO

from .argparse_go import parser as go_parser
from .errors import DecodeError
from .marshal import get_marshaller
from .marshal.human import select_columns
from .netlink.pcap import read_packets
from .netlink.replay import decode_stream
from .records.encode import encode_rows
from .records.envelope import EncodedEnvelope

FORMATS = ("jsonl", "protoJson", "protoText", "humanize", "csv", "tsv")


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


class _Columns:
    """What marshallers read from a Config, for the decode command."""

    def __init__(self, columns: str) -> None:
        self.csv_columns = columns


def marshaller(fmt: str, columns: str = "") -> Callable[[EncodedEnvelope], bytes]:
    """The daemon's marshaller of that name; one per run (csv/tsv: one header)."""
    return get_marshaller(fmt, _Columns(columns))


def write_envelope(env: EncodedEnvelope, marshal: Callable[[EncodedEnvelope], bytes], out: TextIO) -> None:
    # protoText Envelopes concatenate into one Envelope; the other formats are line based
    out.write(marshal(env).decode())


def main(argv) -> int:
    ap = go_parser(prog="xtcp2 decode", description="Decode a netlink sock_diag capture (pcap, link type 253).")
    ap.add_argument("--format", "-format", choices=FORMATS, default="jsonl")
    ap.add_argument("--columns", "-columns", default="", help="csv/tsv: XtcpFlatRecord json field names; empty = all")
    ap.add_argument("file")
    args = ap.parse_args(argv)
    select_columns(args.columns)  # unknown column: one-line error before reading the file
    marshal = marshaller(args.format, args.columns)
    records = 0
    try:
        for env in decode_file(args.file):
            write_envelope(env, marshal, sys.stdout)
            records += env.rows
    except DecodeError as e:
        sys.stdout.flush()
        raise DecodeError(f"{e}; the {records} records before it were written" if records else str(e)) from None
    return 0
