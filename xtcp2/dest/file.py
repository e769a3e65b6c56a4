"""file:PATH — append payloads to a file, rotating by size.

file:/var/log/xtcp.bin                   append; rotate to .1, .2 ... at 64 MiB
file:/var/log/xtcp.bin?maxBytes=1048576&keep=5
file:/data/ch/?perEnvelope=1             a directory: one file per payload, named
                                         <epoch_ns>-<seq>.bin, what ClickHouse's
                                         file() table function reads as ProtobufList
"""
from __future__ import annotations

import errno
import os
import time
from urllib.parse import parse_qs

from ..errors import DestinationError
from .base import Destination, register
from .queued import num_option


def _no_follow(path: str, flags: int) -> int:
    # a symlink planted at the destination must not redirect root's writes elsewhere
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)


@register("file")
class FileDestination(Destination):
    def __init__(self, address: str, config) -> None:
        super().__init__(address, config)
        path, _, query = address.partition("?")
        if not path:
            raise DestinationError("file: needs a path, e.g. file:/var/log/xtcp2.bin")
        opts = {k: v[-1] for k, v in parse_qs(query).items()} if query else {}
        unknown = set(opts) - {"maxBytes", "keep", "perEnvelope"}
        if unknown:
            raise DestinationError(f"file: unknown option(s) {', '.join(sorted(unknown))}")
        self.path = path
        self.max_bytes = num_option("file", opts, "maxBytes", 64 * 1024 * 1024, 1024)
        self.keep = num_option("file", opts, "keep", 5, 0)
        self.per_envelope = bool(num_option("file", opts, "perEnvelope", 0, 0))
        self._seq = 0
        self._fh = None
        if self.per_envelope:
            if not os.path.isdir(path):
                raise DestinationError(f"file: {path} is not a directory (perEnvelope=1 writes one file per envelope into it)")
            if not os.access(path, os.W_OK):
                raise DestinationError(f"file: directory {path} is not writable")
        else:
            self._open()

    def _open(self) -> None:
        try:
            self._fh = open(self.path, "ab", opener=_no_follow)
        except OSError as e:
            why = "is a symbolic link (refused)" if e.errno == errno.ELOOP else e.strerror
            raise DestinationError(f"file: cannot open {self.path}: {why}") from None

    def _rotate(self) -> None:
        self._fh.close()
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def send(self, payload: bytes, records: int) -> None:
        try:
            if self.per_envelope:
                self._seq += 1
                name = os.path.join(self.path, f"{time.time_ns()}-{self._seq:06d}.bin")
                tmp = name + ".tmp"
                with open(tmp, "wb", opener=_no_follow) as fh:
                    fh.write(payload)
                os.replace(tmp, name)  # readers never see a half-written file
                return
            if self._fh.tell() > 0 and self._fh.tell() + len(payload) > self.max_bytes:
                self._rotate()
            self._fh.write(payload)
        except OSError as e:
            raise DestinationError(f"file: write to {self.path} failed: {e.strerror}") from None

    def flush(self, timeout: float = 5.0) -> None:
        if self._fh:
            try:
                self._fh.flush()
            except OSError:
                pass

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
