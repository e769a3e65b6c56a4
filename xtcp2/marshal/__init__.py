"""Marshallers: EncodedEnvelope -> bytes for one destination message. One module per format.

MARSHALLERS is the registry: every format's name comes from here (the -marshal flag,
Config validation). An entry with a `configured(config)` method is a factory for
formats that take settings (csv/tsv: -columns) or keep state (the header line).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..records.envelope import EncodedEnvelope

Marshaller = Callable[["EncodedEnvelope"], bytes]

# name -> (module, function): a format's module (and what it needs: the protobuf
# runtime, msgpack) is imported when the format is used, not at start
MARSHALLERS: dict[str, tuple[str, str]] = {
    "protobufList": ("protobuf_list", "marshal"),
    "protoJson": ("proto_json", "marshal"),
    "protoText": ("proto_text", "marshal"),
    "msgpack": ("msgpack_format", "marshal"),
    "jsonl": ("jsonl", "marshal"),
    "csv": ("table", "csv_marshal"),
    "tsv": ("table", "tsv_marshal"),
    "humanize": ("humanize", "marshal"),
}
# Not text: refused on a terminal (-dest stdout), see dest/stdout.py.
BINARY = frozenset({"protobufList", "msgpack"})


def get_marshaller(name: str, config=None) -> Marshaller:
    try:
        module, attr = MARSHALLERS[name]
    except KeyError:
        raise KeyError(f"unknown marshaller {name!r}; valid: {', '.join(MARSHALLERS)}") from None
    m = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    make = getattr(m, "configured", None)
    return make(config) if make is not None and config is not None else m
