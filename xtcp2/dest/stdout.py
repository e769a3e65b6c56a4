"""stdout: write each payload to standard output (binary-safe)."""
from __future__ import annotations

import sys

from ..errors import DestinationError
from .base import Destination, register


@register("stdout")
class StdoutDestination(Destination):
    def __init__(self, address, config) -> None:
        super().__init__(address, config)
        self._out = sys.stdout.buffer

    def send(self, payload: bytes, records: int) -> None:
        try:
            self._out.write(payload)
        except (BrokenPipeError, OSError) as e:
            raise DestinationError(f"stdout: {e.strerror or e}") from None

    def flush(self, timeout: float = 5.0) -> None:
        try:
            self._out.flush()
        except (BrokenPipeError, OSError):
            pass
