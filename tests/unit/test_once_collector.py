"""--once with -collector auto: netlink unless the dump's walk visits enough sockets to
pay for loading the BPF iterator; the walk's size comes from sockstat."""
from __future__ import annotations

import pytest

from xtcp2 import cli
from xtcp2.config import Config
from xtcp2.netns import sockstat

SOCKSTAT = b"""sockets: used 100008
TCP: inuse 66668 orphan 0 tw 12 alloc 300025 mem 49764
UDP: inuse 0 mem 185
"""


def test_host_wide_alloc_and_namespace_counts_are_parsed(tmp_path):
    f = tmp_path / "sockstat"
    f.write_bytes(SOCKSTAT)
    assert sockstat.tcp_sockets_allocated(str(f)) == 300025
    assert sockstat._sockstat_tcp(str(f)) == 66668 + 12
    f6 = tmp_path / "sockstat6"
    f6.write_bytes(b"TCP6: inuse 33334\nUDP6: inuse 0\n")
    assert sockstat._sockstat_tcp(str(f6)) == 33334


@pytest.mark.parametrize("walked, want", [(10, "netlink"), (cli.ONCE_ITER_MIN_SOCKETS, "auto"), (10**6, "auto")])
def test_once_auto_takes_netlink_below_the_threshold(monkeypatch, walked, want):
    # a double for the /proc counters (the host's real ones are whatever other work left)
    monkeypatch.setattr(sockstat, "walked_sockets", lambda: walked)
    monkeypatch.setattr(sockstat, "tcp_sockets_allocated", lambda path="": walked)
    for netns in (["self"], ["some-ns"], []):
        cfg = Config(once=True, netns=netns).validate()
        assert cli._once_collector(cfg).collector == want
