"""Marshallers: EncodedEnvelope -> bytes for one destination message. One module per format.

MARSHALLERS is the registry: every format's name comes from here (the -marshal flag,
Config validation). An entry with a `configured(config)` method is a factory for
formats that take settings (csv/tsv: -columns) or keep state (the header line).
"""
from __future__ import annotations

from typing import Callable

from ..records.envelope import EncodedEnvelope
from . import humanize, jsonl, msgpack_format, proto_json, proto_text, protobuf_list, table

Marshaller = Callable[[EncodedEnvelope], bytes]

MARSHALLERS: dict[str, Marshaller] = {
    "protobufList": protobuf_list.marshal,
    "protoJson": proto_json.marshal,
    "protoText": proto_text.marshal,
    "msgpack": msgpack_format.marshal,
    "jsonl": jsonl.marshal,
    "csv": table.csv_marshal,
    "tsv": table.tsv_marshal,
    "humanize": humanize.marshal,
}
# Not text: refused on a terminal (-dest stdout), see dest/stdout.py.
BINARY = frozenset({"protobufList", "msgpack"})


def get_marshaller(name: str, config=None) -> Marshaller:
    try:
        m = MARSHALLERS[name]
    except KeyError:
        raise KeyError(f"unknown marshaller {name!r}; valid: {', '.join(MARSHALLERS)}") from None
    make = getattr(m, "configured", None)
    return make(config) if make is not None and config is not None else m
