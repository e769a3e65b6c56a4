"""file:PATH — append payloads to a file, rotating by size.

file:/var/log/xtcp.bin                   append; rotate to .1, .2 ... at 64 MiB
file:/var/log/xtcp.bin?maxBytes=1048576&keep=5
file:/data/ch/?perEnvelope=1             a directory: one file per payload, named
                                         <epoch_ns>-<seq>.bin, what ClickHouse's
                                         file() table function reads as ProtobufList

A write either lands whole or not at all: the file is unbuffered (a write error is seen
by the send() that caused it, never by a later flush), and a failed or short write (a
full disk) is truncated back to the end of the last whole payload, so everything
appended later stays readable. The failed payload raises DestinationError, which the
pipeline counts as an error and its records as dropped; the next send() simply tries
again, so writing resumes when space returns. perEnvelope=1 writes a .tmp file and
renames it; a .tmp whose write failed is removed.
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
        self._cut_to: int | None = None
        if self.per_envelope:
            if not os.path.isdir(path):
                raise DestinationError(f"file: {path} is not a directory (perEnvelope=1 writes one file per envelope into it)")
            if not os.access(path, os.W_OK):
                raise DestinationError(f"file: directory {path} is not writable")
        else:
            self._open()

    def _open(self) -> None:
        try:
            # unbuffered: each send() is one write() whose failure we see and undo
            self._fh = open(self.path, "ab", buffering=0, opener=_no_follow)
        except OSError as e:
            why = "is a symbolic link (refused)" if e.errno == errno.ELOOP else e.strerror
            raise DestinationError(f"file: cannot open {self.path}: {why}") from None

    def _rotate(self) -> None:
        if self._cut_to is not None:
            os.ftruncate(self._fh.fileno(), self._cut_to)  # never rotate a torn file away
            self._cut_to = None
        self._fh.close()
        self._fh = None  # if a rename below fails, the next send() reopens the file
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
                self._write_one_file(payload)
                return
            if self._fh is None:  # a rotation or reopen failed earlier: try again
                self._open()
            # the size on disk, not a running total: logrotate's copytruncate may have reset it
            size = os.fstat(self._fh.fileno()).st_size if self._cut_to is None else self._cut_to
            if size > 0 and size + len(payload) > self.max_bytes:
                self._rotate()
            self._append(payload)
        except OSError as e:
            raise DestinationError(f"file: write to {self.path} failed: {e.strerror}") from None

    def _append(self, payload: bytes) -> None:
        fd = self._fh.fileno()
        if self._cut_to is not None:  # the last truncation failed: the file must be whole first
            os.ftruncate(fd, self._cut_to)
            self._cut_to = None
        start, done = os.fstat(fd).st_size, 0
        try:
            view = memoryview(payload)
            while done < len(payload):
                n = os.write(fd, view[done:])
                if n == 0:  # cannot happen for a regular file; do not spin if it does
                    raise OSError(errno.EIO, "write returned 0")
                done += n
        except OSError:
            if done:
                # a partial payload would make every later one unreadable: cut it off
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    self._cut_to = start
            raise

    def _write_one_file(self, payload: bytes) -> None:
        self._seq += 1
        name = os.path.join(self.path, f"{time.time_ns()}-{self._seq:06d}.bin")
        tmp = name + ".tmp"
        try:
            with open(tmp, "wb", buffering=0, opener=_no_follow) as fh:
                view, done = memoryview(payload), 0
                while done < len(payload):
                    done += fh.write(view[done:])
            os.replace(tmp, name)  # readers never see a half-written file
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def flush(self, timeout: float = 5.0) -> None:
        """Nothing is buffered: every send() wrote straight to the file."""

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
