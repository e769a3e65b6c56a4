"""glibc malloc settings for the columnar hot path.

Every chunk allocates and frees the same few-MiB numpy arrays. By default glibc serves
such sizes with mmap (or trims the heap) and gives them back on free, so the next chunk
page-faults all of them again: ~45,000 minor faults per 100,000-socket poll, a third of
the encoder's time. Keeping them in the heap costs ~30 MiB of RSS at that size.

Kept in the heap, freed memory stays with the arena that served it, and glibc gives
each thread that allocates its own arena (up to 8 per core): the netlinker workers,
their reader threads and the bpf loop would each keep their own high-water mark of
chunk arrays. Two arenas hold them all: those threads mostly allocate with the GIL
held, so they seldom wait for an arena's lock, and peak RSS fell by ~10 MiB on a
100,000-socket poll.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

_done = False


def tune_malloc(mmap_threshold: int = 64 << 20, trim_threshold: int = 512 << 20, arena_max: int = 2) -> bool:
    """Apply once per process; False where libc has no mallopt (not glibc)."""
    global _done
    if _done:
        return True
    try:
        # libc.so.6 by name: find_library() would run ldconfig in a subprocess
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    ok = ok and mallopt(M_ARENA_MAX, arena_max) == 1
    _done = ok
    return ok
