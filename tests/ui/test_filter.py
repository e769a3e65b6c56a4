"""The ss-style filter grammar of `xtcp2 top`: what matches, precedence, and bad filters."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from xtcp2.ui import filter as flt


@dataclass
class C:
    state: int
    src: object
    sport: int
    dst: object
    dport: int
    netns: str = "default"
    container: str = ""
    process: str = ""


def conn(state=1, src="10.0.0.5", sport=40000, dst="192.0.2.9", dport=443, **kw) -> C:
    return C(state, ipaddress.ip_address(src) if src else None, sport,
             ipaddress.ip_address(dst) if dst else None, dport, **kw)


WEB = conn()
SSH_IN = conn(src="10.0.0.5", sport=22, dst="198.51.100.7", dport=51000)
LISTEN = conn(state=10, src="0.0.0.0", sport=8080, dst="0.0.0.0", dport=0)
TW6 = conn(state=6, src="2001:db8::1", sport=443, dst="2001:db8::2", dport=60000, netns="ns1",
           container="web-1", process="nginx")
ALL = {"web": WEB, "ssh": SSH_IN, "listen": LISTEN, "tw6": TW6}


@pytest.mark.parametrize("text, expected", [
    ("", {"web", "ssh", "listen", "tw6"}),
    ("state established", {"web", "ssh"}),
    ("state listening", {"listen"}),
    ("state time-wait", {"tw6"}),
    ("state connected", {"web", "ssh", "tw6"}),
    ("state bucket", {"tw6"}),
    ("exclude established", {"listen", "tw6"}),
    ("state established or state listening", {"web", "ssh", "listen"}),
    ("dport = :443", {"web"}),
    ("dport == 443", {"web"}),
    ("dport eq :https", {"web"}),
    ("dport != :443", {"ssh", "listen", "tw6"}),
    ("sport < :1024", {"ssh", "tw6"}),
    ("sport >= :8080", {"web", "listen"}),
    ("sport gt :40000", set()),
    ("sport le :22", {"ssh"}),
    ("dst 192.0.2.0/24", {"web"}),
    ("dst 192.0.2.9:443", {"web"}),
    ("dst != 192.0.2.0/24", {"ssh", "listen", "tw6"}),
    ("src 2001:db8::/32", {"tw6"}),
    ("src [2001:db8::1]:443", {"tw6"}),
    ("src *:22", {"ssh"}),
    ("dst ::ffff:192.0.2.9", {"web"}),   # a v4-mapped prefix matches the IPv4 socket
    ("netns = ns1", {"tw6"}),
    ("netns != ns1", {"web", "ssh", "listen"}),
    ("container = web-1", {"tw6"}),
    ("process nginx", {"tw6"}),
    # adjacency is "and"; "and" binds tighter than "or"; not, parentheses
    ("state established dport = :443", {"web"}),
    ("state established and dport = :443 or state listening", {"web", "listen"}),
    ("state established and ( dport = :443 or state listening )", {"web"}),
    ("not state established", {"listen", "tw6"}),
    ("! ( sport = :22 or sport = :8080 )", {"web", "tw6"}),
    ("state established && dport != :443 || netns = ns1", {"ssh", "tw6"}),
])
def test_filter_selects(text, expected):
    keep = flt.parse(text)
    assert {name for name, c in ALL.items() if keep(c)} == expected


@pytest.mark.parametrize("text, message", [
    ("state bogus", "unknown TCP state 'bogus'"),
    ("dport = :99999", "not a port"),
    ("dport =", "filter ends where a port was expected"),
    ("( state established", "filter ends where ')' was expected"),
    ("state established )", "unexpected ')'"),
    ("dst 300.1.1.1", "not an address or prefix"),
    ("dst [::1", "unclosed '['"),
    ("frobnicate", "unknown filter word 'frobnicate'"),
    ("netns < x", "operator '<' does not apply here"),
    ("and", "unknown filter word 'and'"),
])
def test_bad_filter_is_one_line_error(text, message):
    with pytest.raises(flt.FilterError) as e:
        flt.parse(text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_argv_words_are_joined_like_ss():
    keep = flt.parse(["state", "established", "and", "(", "dport", "=", ":443", ")"])
    assert keep(WEB) and not keep(SSH_IN)
