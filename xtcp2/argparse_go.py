"""argparse with Go-style help: `-help` (what upstream's Go flag package accepts), -h, --help."""
from __future__ import annotations

import argparse


def parser(**kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser on which `-help` shows help instead of parsing as `-h elp`."""
    p = argparse.ArgumentParser(add_help=False, **kwargs)
    p.add_argument("-h", "-help", "--help", action="help", help="show this help and exit")
    return p
