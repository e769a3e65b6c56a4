"""The one interface every destination implements.

A destination receives already-marshalled payloads: one call = one message on the
wire (one Kafka message, one datagram, one file write...). It never sees records.
Modules register themselves with @register("scheme") and are looked up by the
scheme part of -dest ("kafka:127.0.0.1:9092" -> "kafka").
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Callable, ClassVar

if TYPE_CHECKING:  # config imports dest (scheme names): no import back at run time
    from ..config import Config


class Destination(abc.ABC):
    scheme: ClassVar[str]
    # True when close() itself drains within the destination's own deadline (queued
    # network destinations): the pipeline then calls close() without a flush() first.
    flushes_on_close: ClassVar[bool] = False

    def __init__(self, address: str, config: Config) -> None:
        """`address` is -dest without "scheme:". Raise DestinationError on a bad address."""
        self.address = address
        self.config = config

    @abc.abstractmethod
    def send(self, payload: bytes, records: int) -> None:
        """Deliver one marshalled payload holding `records` records.

        Raise DestinationError when it could not be delivered; the caller counts the
        drop. Must not block the caller for longer than the configured timeout.
        """

    def flush(self, timeout: float = 5.0) -> None:
        """Push out anything buffered, waiting at most `timeout` seconds."""

    def close(self) -> None:
        """Release resources. Called once, after a final flush() unless flushes_on_close."""


_REGISTRY: dict[str, Callable[[str, Config], Destination]] = {}


def register(scheme: str):
    def deco(cls):
        cls.scheme = scheme
        _REGISTRY[scheme] = cls
        return cls
    return deco


def registry() -> dict[str, Callable[[str, Config], Destination]]:
    return _REGISTRY
