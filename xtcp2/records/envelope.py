"""An encoded Envelope as it travels from the encoder to marshallers and destinations."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the protobuf runtime loads when a message is built, not before
    from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb


@dataclass
class EncodedEnvelope:
    """`body` is a serialized Envelope (repeated XtcpFlatRecord row = 10), no length prefix.

    The columnar encoder writes it directly; formats that need message objects
    (protoJson, protoText, msgpack, the gRPC stream) parse it once via message().
    """

    body: bytes
    rows: int
    _msg: pb.Envelope | None = field(default=None, repr=False, compare=False)
    # end offset of each row in body, when the producer knows them (the Emitter does):
    # the gRPC stream then cuts its per-record responses without parsing varints
    row_ends: np.ndarray | None = field(default=None, repr=False, compare=False)

    def message(self) -> pb.Envelope:
        if self._msg is None:
            from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
            self._msg = pb.Envelope.FromString(self.body)
        return self._msg

    @classmethod
    def from_records(cls, records: list[pb.XtcpFlatRecord]) -> "EncodedEnvelope":
        from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
        env = pb.Envelope(row=records)
        return cls(env.SerializeToString(), len(records), env)
