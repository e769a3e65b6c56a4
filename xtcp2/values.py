"""Checks for values that come from outside (flags, gRPC Set, destination options).

One place decides what a number, a duration or a piece of text may be, so every
entry point refuses the same things: NaN and infinities (a `-frequency inf` would
poll back to back, a `flushTimeout=nan` would never let `--once` exit), values out
of range, and control characters in text that ends up on records or in logs.

The functions raise ValueError with a short reason; callers add the name of the
setting (ConfigError, DestinationError) so the user sees one line naming both.
It imports nothing from xtcp2: config, dest and the tools all use it.
"""
from __future__ import annotations

import math
import re

MAX_DURATION_S = 7 * 24 * 3600.0   # upstream's bound for its durations (buf.validate lte 604800s)
MAX_INT = 2**63 - 1                  # beyond this a setting is a typo, not a size

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# C0/C1 controls incl. NUL, ESC, CR, LF and DEL; U+2028/2029 (newlines to a log reader);
# lone surrogates (argv bytes that were not UTF-8, which protobuf could not encode later).
_BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _fmt(x: float) -> str:
    return f"{x:g}"


def number(value: object, minimum: float, maximum: float, *, integer: bool = False,
           above: bool = False, unit: str = "") -> float:
    """`value` if it is a finite number in [minimum, maximum] (or (minimum, maximum] with
    above=True), an int when `integer`. Raises ValueError naming the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}")
    if integer and not isinstance(value, int):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, not {value:g}")
        value = int(value)
    low_ok = value > minimum if above else value >= minimum
    if not low_ok or value > maximum:
        lo = f"> {_fmt(minimum)}" if above else f">= {_fmt(minimum)}"
        raise ValueError(f"must be {lo} and <= {_fmt(maximum)}{unit}, not {_fmt(value)}")
    return value


def parse_number(text: str, minimum: float, maximum: float, *, integer: bool = False, above: bool = False,
                 unit: str = "") -> float:
    """A number written as text (a destination option, a flag): `number()` of its value.
    The message reads after the text: f"{name}={text!r} {error}"."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("is not a number") from None
    if integer:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("is not a whole number") from None
    return number(value, minimum, maximum, integer=integer, above=above, unit=unit)


def parse_duration(text: str) -> float:
    """Seconds of a Go duration ('5s', '100ms', '1m30s', '0'); a bare number means seconds.

    Only finite values between 0 and 7 days pass: 'inf', 'nan', '1e400' and negative
    values are refused here, where every duration flag is read.
    """
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
            raise ValueError(f"invalid duration {text!r} (examples: 10s, 1m30s, 250ms)") from None
        value = total
    try:
        return number(value, 0.0, MAX_DURATION_S, unit=" s (7 days)")
    except ValueError as e:
        raise ValueError(f"invalid duration {text!r}: {e}") from None


def text(value: object, max_len: int) -> str:
    """`value` if it is a str of at most max_len characters without control characters."""
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"longer than {max_len} characters")
    bad = _BAD_TEXT.search(value)
    if bad:
        raise ValueError(f"contains control character {ascii(bad.group())} at position {bad.start()}; "
                         "only printable text is allowed")
    return value


def ifname(value: object) -> str:
    """`value` if it is a network interface name the kernel accepts (dev_valid_name: 1-15
    bytes, not '.' or '..', no '/', ':' or whitespace) and printable."""
    name = text(value, 15)
    if not name or len(name.encode()) > 15 or name in (".", ".."):
        raise ValueError(f"invalid interface name {name!r}: 1 to 15 bytes, not '.' or '..'")
    if not name.isprintable() or any(ch in "/:" or ch.isspace() for ch in name):
        raise ValueError(f"invalid interface name {name!r}: no '/', ':' or whitespace")
    return name


def http_url(value: object) -> str:
    """An http:// or https:// URL with a host (a server the daemon pushes to)."""
    from urllib.parse import urlsplit

    s = str(value)
    try:
        parts = urlsplit(s)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http://HOST[:PORT][/PATH] or https://..., not {s!r}")
    if " " in s:
        raise ValueError("contains a space")
    return s


def listen_address(value: str) -> tuple[str, int]:
    """'127.0.0.1:9088', '[::1]:9088', ':9088' (all interfaces, as Go's net.Listen) -> (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port_s)
