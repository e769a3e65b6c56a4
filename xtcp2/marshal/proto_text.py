"""protoText: the protobuf text format of the Envelope (human-readable, for debugging)."""
from __future__ import annotations

from google.protobuf import text_format

from ..records.envelope import EncodedEnvelope


def marshal(env: EncodedEnvelope) -> bytes:
    return text_format.MessageToString(env.message()).encode()
