"""Run a function inside another network namespace, on a dedicated thread.

Python 3.11 has no os.setns, so libc's setns() is called through ctypes. setns only
moves the calling thread; a single worker thread does every switch and always
returns to the daemon's own namespace, so no other thread ever runs in a foreign one.
A socket created while switched stays bound to that namespace after the thread
returns, which is all the daemon needs.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsEnterer:
    """Owns the worker thread and a handle on the daemon's own namespace."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor   # not imported by runs that stay home (--once)
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns-enter")
        self._lock = threading.Lock()

    def run_in(self, ns_path: str, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """fn() executed inside the namespace at ns_path. OSError if it can't be entered."""
        return self._pool.submit(self._switch_and_call, ns_path, fn).result(timeout)

    def _switch_and_call(self, ns_path: str, fn: Callable[[], T]) -> T:
        # The fd is held only for the switch: an open nsfs fd would keep a deleted
        # namespace alive.
        fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            return fn()
        finally:
            _setns(self._home)  # if this failed the thread would be stranded: let it raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        os.close(self._home)
