"""How collection is driven: `poll` (a timer on a fixed grid) or `bpf` (kernel events).

The Daemon holds one Mode and talks to it only through the Mode interface (base.py).
"""
from .base import Mode, Parts

__all__ = ["Mode", "Parts"]
