"""Decode netlink bytes from a capture into Columns, through the same code as live dumps."""
from __future__ import annotations

from typing import Iterable

from ..errors import DecodeError
from .decode import Columns, decode_messages
from .diag import Chunk, DumpAborted, NetlinkError, walk_batch


def decode_packets(packets: Iterable[bytes], wanted=None) -> Columns:
    """Columns for every socket message in `packets` (one recv() each)."""
    packets = list(packets)
    size = sum((len(p) + 7) & ~7 for p in packets) + 8
    chunk = Chunk(bytearray(size))
    words = memoryview(chunk.buf).cast("I")
    for i, p in enumerate(packets):
        start = chunk.used
        chunk.buf[start:start + len(p)] = p
        try:
            walk_batch(chunk.buf, words, start, start + len(p), chunk)
        except DumpAborted as e:
            raise DecodeError(f"packet {i}: {e}") from None
        except NetlinkError as e:
            raise DecodeError(f"packet {i}: kernel error reply: {e.strerror}") from None
        chunk.used = (start + len(p) + 7) & ~7
    return decode_messages(chunk.buf, chunk.message_offsets(), wanted, used=chunk.used)
