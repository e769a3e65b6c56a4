"""protobufList: varint(len(Envelope)) || Envelope.

The format ClickHouse's ProtobufList reader and upstream consumers expect; exactly one
Envelope per destination message (ClickHouse rejects two concatenated in one message).
"""
from __future__ import annotations

from ..records.encode import varint
from ..records.envelope import EncodedEnvelope


def marshal(env: EncodedEnvelope) -> bytes:
    return varint(len(env.body)) + env.body


def unmarshal(data: bytes) -> list[bytes]:
    """Split a stream of length-delimited Envelopes back into Envelope bodies."""
    bodies, pos = [], 0
    while pos < len(data):
        n = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError(f"truncated varint at offset {pos}")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if pos + n > len(data):
            raise ValueError(f"envelope of {n} bytes at offset {pos} runs past the end ({len(data)})")
        bodies.append(data[pos:pos + n])
        pos += n
    return bodies
