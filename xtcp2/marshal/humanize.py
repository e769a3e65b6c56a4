"""humanize: one JSON object per record per line with human values (marshal/human.py):
state names, text addresses, RTT in ms, RFC 3339 timestamps. For people and jq, not
for ClickHouse (use jsonl)."""
from __future__ import annotations

import json

from ..records.envelope import EncodedEnvelope
from .human import human_dict


def marshal(env: EncodedEnvelope) -> bytes:
    rows = env.message().row
    if not len(rows):
        return b""
    return ("\n".join(json.dumps(human_dict(r), separators=(",", ":")) for r in rows) + "\n").encode()
