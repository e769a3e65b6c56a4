"""Marshallers: EncodedEnvelope -> bytes for one destination message. One module per format."""
from __future__ import annotations

from typing import Callable

from ..records.envelope import EncodedEnvelope
from . import msgpack_format, proto_json, proto_text, protobuf_list

Marshaller = Callable[[EncodedEnvelope], bytes]

MARSHALLERS: dict[str, Marshaller] = {
    "protobufList": protobuf_list.marshal,
    "protoJson": proto_json.marshal,
    "protoText": proto_text.marshal,
    "msgpack": msgpack_format.marshal,
}


def get_marshaller(name: str) -> Marshaller:
    try:
        return MARSHALLERS[name]
    except KeyError:
        raise KeyError(f"unknown marshaller {name!r}; valid: {', '.join(MARSHALLERS)}") from None
