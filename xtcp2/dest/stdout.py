"""stdout: write each payload to standard output (binary-safe)."""
from __future__ import annotations

import sys

from ..errors import ConfigError, DestinationError
from ..marshal import BINARY
from .base import Destination, register


@register("stdout")
class StdoutDestination(Destination):
    def __init__(self, address, config) -> None:
        super().__init__(address, config)
        self._out = sys.stdout.buffer
        if config.marshal_to in BINARY and self._out.isatty():
            # binary on a terminal is garbage on screen and can set its modes
            raise ConfigError("marshal", f"{config.marshal_to} is binary and stdout is a terminal; "
                                         "use -marshal humanize|jsonl|csv|tsv, or redirect stdout")

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
