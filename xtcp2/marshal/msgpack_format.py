"""msgpack: an array of maps, one per record, proto field names, addresses as strings."""
from __future__ import annotations

import msgpack

from ..records.convert import record_to_dict
from ..records.envelope import EncodedEnvelope


def marshal(env: EncodedEnvelope) -> bytes:
    return msgpack.packb([record_to_dict(r) for r in env.message().row], use_bin_type=True)
