"""Destinations: where marshalled batches go. One module per scheme."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import DestinationError
from .base import Destination, register, registry

if TYPE_CHECKING:  # config imports dest (scheme names): no import back at run time
    from ..config import Config

# scheme -> module that registers it. Imported lazily so that an optional client
# library (confluent-kafka, nats-py, ...) is only needed when its scheme is used.
MODULES = {
    "null": "null",
    "stdout": "stdout",
    "stderr": "stdout",
    "tcp": "tcp",
    "http": "http",
    "https": "http",
    "file": "file",
    "kafka": "kafka",
    "nats": "nats",
    "nsq": "nsq",
    "valkey": "valkey",
    "udp": "udp",
    "unix": "unix",
    "unixgram": "unix",
    "s3parquet": "s3parquet",
}


def known_schemes() -> set[str]:
    return set(MODULES)


def open_destination(spec: str, config: Config) -> Destination:
    """Build the destination named by a -dest value such as "file:/tmp/x.bin"."""
    scheme, _, address = spec.partition(":")
    if scheme not in MODULES:
        raise DestinationError(f"unknown destination scheme {scheme!r} in {spec!r}; valid: {', '.join(sorted(MODULES))}")
    try:
        importlib.import_module(f"{__name__}.{MODULES[scheme]}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{MODULES[scheme]}":
            raise DestinationError(f"destination {scheme!r} is not available in this build") from None
        raise DestinationError(f"destination {scheme!r} needs a library that is not installed: {e.name}") from None
    except ImportError as e:
        raise DestinationError(f"destination {scheme!r} needs a library that is not installed: {e}") from None
    return registry()[scheme](address, config)


__all__ = ["Destination", "DestinationError", "open_destination", "known_schemes", "register"]
