"""Decode netlink bytes from a capture into Columns, through the same code as live dumps."""
from __future__ import annotations

from typing import Iterable, Iterator

from ..errors import DecodeError
from .decode import Columns, decode_messages
from .diag import Chunk, DumpAborted, NetlinkError, walk_batch

STREAM_CHUNK = 4 << 20  # netlink bytes decoded at once by decode_stream (a live dump's chunk size)


def _add_packet(chunk: Chunk, words: memoryview, p: bytes, index: int) -> None:
    """Copy one recv() into the chunk and index its socket messages; on a damaged packet
    the chunk is left as it was (none of that packet's messages) and DecodeError raised."""
    start, kept = chunk.used, len(chunk.offsets)
    chunk.buf[start:start + len(p)] = p
    try:
        walk_batch(chunk.buf, words, start, start + len(p), chunk)
    except DumpAborted as e:
        del chunk.offsets[kept:]
        raise DecodeError(f"packet {index}: {e}") from None
    except NetlinkError as e:
        del chunk.offsets[kept:]
        raise DecodeError(f"packet {index}: kernel error reply: {e.strerror}") from None
    chunk.used = (start + len(p) + 7) & ~7


def _decode(chunk: Chunk, wanted) -> Columns:
    return decode_messages(chunk.buf, chunk.message_offsets(), wanted, used=chunk.used)


def decode_packets(packets: Iterable[bytes], wanted=None) -> Columns:
    """Columns for every socket message in `packets` (one recv() each), all in memory."""
    packets = list(packets)
    chunk = Chunk(bytearray(sum((len(p) + 7) & ~7 for p in packets) + 8))
    words = memoryview(chunk.buf).cast("I")
    for i, p in enumerate(packets):
        _add_packet(chunk, words, p, i)
    return _decode(chunk, wanted)


def decode_stream(packets: Iterable[bytes], wanted=None, chunk_bytes: int = STREAM_CHUNK) -> Iterator[Columns]:
    """Columns for about `chunk_bytes` of packets at a time, so memory does not grow with
    the capture. A damaged packet (or a read error of `packets`) ends the stream with
    DecodeError, after the Columns of every intact packet before it were yielded."""
    chunk = words = None

    def fresh(size: int):
        c = Chunk(bytearray(max(size, chunk_bytes) + 8))
        return c, memoryview(c.buf).cast("I")

    try:
        for index, p in enumerate(packets):
            need = (len(p) + 7) & ~7
            if chunk is not None and chunk.used + need + 8 > len(chunk.buf):
                if chunk.offsets:
                    yield _decode(chunk, wanted)
                chunk = None
            if chunk is None:
                chunk, words = fresh(need)  # a new buffer: earlier Columns may still view the old one
            _add_packet(chunk, words, p, index)
    except DecodeError:
        # the intact packets before the damage still go out, then the error
        if chunk is not None and chunk.offsets:
            yield _decode(chunk, wanted)
        raise
    if chunk is not None and chunk.offsets:
        yield _decode(chunk, wanted)
