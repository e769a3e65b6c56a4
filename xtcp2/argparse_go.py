"""argparse with Go conventions shared by every command: `-help` (what upstream's Go flag
package accepts) and Go duration values."""
from __future__ import annotations

import argparse
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go time.ParseDuration subset ('5s', '100ms', '1m30s', '0'); a bare number means seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 10s, 1m30s, 250ms)")
        return total
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be >= 0")
    return value


def parser(**kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser on which `-help` shows help instead of parsing as `-h elp`."""
    p = argparse.ArgumentParser(add_help=False, **kwargs)
    p.add_argument("-h", "-help", "--help", action="help", help="show this help and exit")
    return p
