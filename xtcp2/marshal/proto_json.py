"""protoJson: one JSON object per record per line, protojson field names (lowerCamelCase).

Line-delimited rather than one big Envelope object so that stream consumers (stdout,
files, NATS) can process records one at a time. Addresses are rendered as strings.
"""
from __future__ import annotations

import json

from ..records.convert import record_to_dict
from ..records.envelope import EncodedEnvelope


def marshal(env: EncodedEnvelope) -> bytes:
    lines = [json.dumps(record_to_dict(r, json_names=True), separators=(",", ":"))
             for r in env.message().row]
    return ("\n".join(lines) + "\n").encode() if lines else b""
