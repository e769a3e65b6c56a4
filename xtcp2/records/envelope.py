"""An encoded Envelope as it travels from the encoder to marshallers and destinations."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the protobuf runtime loads when a message is built, not before
    from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb


class EncodedEnvelope:
    """`body` is a serialized Envelope (repeated XtcpFlatRecord row = 10), no length prefix.

    The columnar encoder writes it directly; formats that need message objects
    (protoJson, protoText, msgpack, the gRPC stream) parse it once via message().
    """

    __slots__ = ("body", "rows", "row_ends", "_msg")

    def __init__(self, body: bytes, rows: int, row_ends: np.ndarray | None = None) -> None:
        self.body = body
        self.rows = rows
        # end offset of each row in body, when the producer knows them (the Emitter does):
        # the gRPC stream then cuts its per-record responses without parsing varints
        self.row_ends = row_ends
        self._msg: pb.Envelope | None = None

    def __repr__(self) -> str:
        return f"EncodedEnvelope({len(self.body)} bytes, {self.rows} rows)"

    def message(self) -> pb.Envelope:
        if self._msg is None:
            from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
            self._msg = pb.Envelope.FromString(self.body)
        return self._msg

    @classmethod
    def from_records(cls, records: list[pb.XtcpFlatRecord]) -> "EncodedEnvelope":
        from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
        env = pb.Envelope(row=records)
        out = cls(env.SerializeToString(), len(records))
        out._msg = env
        return out
