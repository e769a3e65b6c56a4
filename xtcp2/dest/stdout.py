"""stdout / stderr: write each payload verbatim to standard output or standard error
(binary-safe; framing is the marshaller's job, as upstream). The daemon logs to stderr
too, so -dest stderr suits line formats read by a human, stdout is the clean channel."""
from __future__ import annotations

import sys

from ..errors import ConfigError, DestinationError
from ..marshal import BINARY
from .base import Destination, register


@register("stdout")
class StdoutDestination(Destination):
    def __init__(self, address, config) -> None:
        super().__init__(address, config)
        self._out = self._stream()
        if config.marshal_to in BINARY and self._out.isatty():
            # binary on a terminal is garbage on screen and can set its modes
            raise ConfigError("marshal", f"{config.marshal_to} is binary and {self.scheme} is a terminal; "
                                         f"use -marshal humanize|jsonl|csv|tsv, or redirect {self.scheme}")

    @staticmethod
    def _stream():
        return sys.stdout.buffer

    def send(self, payload: bytes, records: int) -> None:
        try:
            self._out.write(payload)
        except (BrokenPipeError, OSError) as e:
            raise DestinationError(f"{self.scheme}: {e.strerror or e}") from None

    def flush(self, timeout: float = 5.0) -> None:
        try:
            self._out.flush()
        except (BrokenPipeError, OSError):
            pass


@register("stderr")
class StderrDestination(StdoutDestination):
    @staticmethod
    def _stream():
        return sys.stderr.buffer
