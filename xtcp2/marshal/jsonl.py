"""jsonl (and protoJson): one JSON object per record per line, xtcp2's JSON dialect
(records/convert.py). ClickHouse reads it as JSONEachRow; jq and any JSON reader line
by line."""
from __future__ import annotations

from ..records.convert import record_to_json
from ..records.envelope import EncodedEnvelope


def marshal(env: EncodedEnvelope) -> bytes:
    rows = env.message().row
    return ("\n".join(record_to_json(r) for r in rows) + "\n").encode() if len(rows) else b""
