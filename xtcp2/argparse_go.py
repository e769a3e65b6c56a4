"""The one Go-style flag parser every xtcp2 command uses.

Upstream's tools use Go's flag package, so ours accept what it accepts: `-name value`,
`-name=value`, `--name value`, `-help`, durations such as 5s / 100ms / 1m30s. A bad
flag or value is one line on stderr and exit 2, without the usage dump.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import values


def parse_duration(text: str) -> float:
    """Go time.ParseDuration subset ('5s', '100ms', '1m30s', '0'); a bare number means seconds.
    Finite and 0..7 days (values.parse_duration); argparse shows the reason on one line."""
    try:
        return values.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def port_number(text: str) -> int:
    value = positive_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, not {value}")
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, told the terminal width: left to find it itself, it imports
    shutil (and with it bz2, lzma) for every add_argument, a few ms of every start."""

    def __init__(self, prog: str, **kwargs) -> None:
        if kwargs.get("width") is None:
            try:
                columns = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(sys.__stdout__.fileno()).columns
            except (AttributeError, ValueError, OSError):
                columns = 80
            kwargs["width"] = max(columns, 20) - 2
        super().__init__(prog, **kwargs)


class GoFlagParser(argparse.ArgumentParser):
    """argparse that accepts Go-style flags: -name value, -name=value, --name value, -help.

    Subparsers (add_subparsers) are made of this class too, so they behave the same.
    """

    def __init__(self, prog: str | None = None, description: str | None = None, **kwargs) -> None:
        kwargs["add_help"] = False   # -h would otherwise parse `-help` as `-h elp`
        kwargs.setdefault("allow_abbrev", False)  # Go's flag package never abbreviates
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(prog=prog, description=description, **kwargs)
        self.add_argument("-h", "-help", "--help", action="help", help="show this help and exit")

    def flag(self, name: str, **kwargs):
        """Register -name and --name (both spellings, as Go's flag package accepts)."""
        return self.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)

    def error(self, message: str) -> None:  # one line, no usage dump
        sys.stderr.write(f"{self.prog}: error: {message} (see -help)\n")
        sys.exit(2)


def parser(**kwargs) -> GoFlagParser:
    """A GoFlagParser; keyword arguments as for argparse.ArgumentParser."""
    return GoFlagParser(**kwargs)
