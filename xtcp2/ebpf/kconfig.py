"""The kernel config values our BPF objects read as `__kconfig` externs (CONFIG_HZ).

libbpf resolves `__kconfig` externs from /boot/config-$(uname -r) or /proc/config.gz and
refuses to load the object when neither is readable. That is the normal case in a
container (the image has no /boot of the host's kernel) and on kernels built without
IKCONFIG_PROC (Debian's) when /boot is not mounted, so without a fallback bpf mode would
fail exactly on the hosts it is deployed to. CONFIG_HZ is the only value the programs
need (jiffies -> us/ms, as tcp_get_info() converts), and the kernel exposes its jiffies
counter in /proc/timer_list: two reads a known interval apart give HZ, rounded to the
values Kconfig allows.
"""
from __future__ import annotations

import gzip
import os
import re
import time

from ..errors import Xtcp2Error

KCONFIG_HZ_CHOICES = (100, 250, 300, 1000)
_JIFFIES = re.compile(rb"^jiffies: (\d+)$", re.M)


def hz_from_config(path: str) -> int | None:
    """CONFIG_HZ from a kernel config file (plain or gzip), None if it is not there."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for line in f:
                if line.startswith(b"CONFIG_HZ="):
                    return int(line.split(b"=", 1)[1])
    except (OSError, EOFError, ValueError):
        pass
    return None


def read_jiffies(path: str = "/proc/timer_list") -> int:
    with open(path, "rb") as f:
        m = _JIFFIES.search(f.read())
    if m is None:
        raise Xtcp2Error(f"{path} has no 'jiffies:' line")
    return int(m.group(1))


def nearest_hz(ticks_per_second: float) -> int:
    return min(KCONFIG_HZ_CHOICES, key=lambda hz: abs(hz - ticks_per_second))


def measure_hz(interval: float = 0.1, timer_list: str = "/proc/timer_list") -> int:
    """CONFIG_HZ from the jiffies counter: 0.1 s gives 10-100 ticks, +-1 at each end, which
    still rounds to the right Kconfig choice (the closest pair, 250 and 300, are 50 apart)."""
    t0, j0 = time.monotonic(), read_jiffies(timer_list)
    time.sleep(interval)
    t1, j1 = time.monotonic(), read_jiffies(timer_list)
    return nearest_hz((j1 - j0) / (t1 - t0))


def kernel_hz(release: str | None = None) -> int:
    """CONFIG_HZ of the running kernel: its config file where one is readable, else measured."""
    release = release or os.uname().release
    for path in (f"/boot/config-{release}", "/proc/config.gz"):
        hz = hz_from_config(path)
        if hz:
            return hz
    try:
        return measure_hz()
    except (OSError, ValueError, Xtcp2Error) as e:
        raise Xtcp2Error(f"kernel HZ unknown: no CONFIG_HZ in /boot/config-{release} or /proc/config.gz, "
                         f"and /proc/timer_list unreadable ({e}); mount the host's /boot read-only") from None


_cached: str | None = None


def kconfig_override() -> str:
    """The kconfig text for the objects' open options. Always ours, never libbpf's own
    lookup: that one fails the load without a config file, and with an empty or foreign
    one it loads with HZ 0 and every jiffies-based field reads 0."""
    global _cached
    if _cached is None:
        _cached = f"CONFIG_HZ={kernel_hz()}\n"
    return _cached
