"""null: discard everything (measures the collector alone)."""
from __future__ import annotations

from .base import Destination, register


@register("null")
class NullDestination(Destination):
    def send(self, payload: bytes, records: int) -> None:
        pass
