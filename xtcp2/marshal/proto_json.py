"""protoJson: the same lines as jsonl (one JSON object per record, xtcp2's JSON dialect).

Line-delimited rather than one big Envelope object so that stream consumers (stdout,
files, NATS) can process records one at a time.
"""
from __future__ import annotations

from .jsonl import marshal  # noqa: F401 - one dialect, two names
