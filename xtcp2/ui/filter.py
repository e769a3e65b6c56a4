"""ss-style connection filters: `state established and ( dport = :443 or sport = :22 )`.

The grammar follows ss(8) so its users need nothing new:

    expr    := or_expr
    or_expr := and_expr ( ("or" | "|" | "||") and_expr )*
    and_expr:= unary ( ["and" | "&" | "&&"] unary )*     adjacent terms mean "and", as in ss
    unary   := ("not" | "!") unary | "(" expr ")" | atom
    atom    := "state" STATE | "exclude" STATE
             | ("sport" | "dport") [OP] [":"]PORT        OP: = == != < > <= >= eq ne lt gt le ge
             | ("src" | "dst") [OP] ADDR[/LEN][:PORT]    OP: = == != (default =)
             | ("netns" | "container" | "process") [OP] NAME

STATE is a TCP state name (established, syn-sent, ..., listening, closing) or one of ss's
groups: all, connected, synchronized, bucket, big. `netns`, `container` and `process`
are xtcp2's own: they match the record's namespace name, container id/name and comm.

`parse()` returns a predicate over anything with the attributes of `ConnView`; a bad
filter raises FilterError with a one-line message that points at the offending word.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, Protocol

# Linux TCP states (include/net/tcp_states.h), named as ss prints them.
STATE_NAMES = {
    1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
    7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW-SYN-RECV",
    13: "BOUND-INACTIVE",
}
_STATE_WORDS = {
    "established": {1}, "syn-sent": {2}, "syn-recv": {3, 12}, "fin-wait-1": {4}, "fin-wait-2": {5},
    "time-wait": {6}, "closed": {7}, "close-wait": {8}, "last-ack": {9}, "listening": {10},
    "listen": {10}, "closing": {11},
}
_ALL = set(range(1, 12))
_STATE_WORDS.update({
    "all": _ALL,
    "connected": _ALL - {10, 7},
    "synchronized": _ALL - {10, 7, 2},
    "bucket": {3, 6},
    "big": _ALL - {3, 6},
})
for _name, _num in list(_STATE_WORDS.items()):
    _STATE_WORDS.setdefault(_name.replace("-", ""), _num)
    _STATE_WORDS.setdefault(_name.replace("-", "_"), _num)
for _num, _name in STATE_NAMES.items():
    _STATE_WORDS.setdefault(_name.lower(), {_num})

_OPS = {"=": "eq", "==": "eq", "eq": "eq", "!=": "ne", "ne": "ne", "neq": "ne", "<": "lt", "lt": "lt",
        ">": "gt", "gt": "gt", "<=": "le", "le": "le", ">=": "ge", "ge": "ge"}
_COMPARE = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "ge": lambda a, b: a >= b,
}
_TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||&|\||!=|==|<=|>=|=|<|>|!|[^\s()&|!=<>]+)")


class FilterError(ValueError):
    """A filter that cannot be parsed; str() is one line."""


class ConnView(Protocol):
    state: int
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    sport: int
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    dport: int
    netns: str
    container: str
    process: str


Predicate = Callable[[ConnView], bool]


def state_name(state: int) -> str:
    return STATE_NAMES.get(state, str(state))


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:  # only reachable on characters the pattern excludes, i.e. never; kept as a guard
            raise FilterError(f"cannot read filter at {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _port(word: str) -> int:
    w = word[1:] if word.startswith(":") else word
    if w.isdigit() and 0 <= int(w) < 65536:
        return int(w)
    try:
        return socket.getservbyname(w, "tcp")
    except OSError:
        raise FilterError(f"not a port: {word!r} (expected :PORT, e.g. :443)") from None


def _unmap(ip):
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class _AddrMatch:
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def __call__(self, ip, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.net is None:
            return True
        ip = _unmap(ip)
        return ip is not None and ip.version == self.net.version and ip in self.net


def _address(word: str) -> _AddrMatch:
    """ADDR, ADDR/LEN, ADDR:PORT, [V6]:PORT, [V6]/LEN, *:PORT, :PORT."""
    host, port = word, None
    if word.startswith("["):
        close = word.find("]")
        if close < 0:
            raise FilterError(f"unclosed '[' in address {word!r}")
        host, rest = word[1:close], word[close + 1:]
        if rest.startswith("/"):
            host, rest = host + rest.split(":", 1)[0], (":" + rest.split(":", 1)[1]) if ":" in rest else ""
        if rest:
            if not rest.startswith(":"):
                raise FilterError(f"bad address {word!r}")
            port = _port(rest)
    elif word.count(":") == 1:  # IPv4 (or *) with a port; bare IPv6 has two or more
        host, p = word.split(":")
        port = _port(p)
    if host in ("", "*"):
        return _AddrMatch(None, port)
    try:
        net = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise FilterError(f"not an address or prefix: {word!r}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped and net.prefixlen >= 96:
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    return _AddrMatch(net, port)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, what: str = "a word") -> str:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"filter ends where {what} was expected")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        if self.peek() is None:
            return lambda c: True
        pred = self.or_expr()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()!r} in filter")
        return pred

    def or_expr(self) -> Predicate:
        terms = [self.and_expr()]
        while self.peek() in ("or", "|", "||"):
            self.i += 1
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else (lambda c: any(t(c) for t in terms))

    def and_expr(self) -> Predicate:
        terms = [self.unary()]
        while (tok := self.peek()) is not None and tok not in ("or", "|", "||", ")"):
            if tok in ("and", "&", "&&"):
                self.i += 1
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else (lambda c: all(t(c) for t in terms))

    def unary(self) -> Predicate:
        tok = self.take("an expression")
        if tok in ("not", "!"):
            inner = self.unary()
            return lambda c: not inner(c)
        if tok == "(":
            inner = self.or_expr()
            if self.take("')'") != ")":
                raise FilterError("missing ')' in filter")
            return inner
        return self.atom(tok)

    def _op(self, allowed: tuple[str, ...] = tuple(_COMPARE)) -> str:
        tok = self.peek()
        if tok in _OPS:
            self.i += 1
            op = _OPS[tok]
            if op not in allowed:
                raise FilterError(f"operator {tok!r} does not apply here (use one of = !=)")
            return op
        return "eq"

    def atom(self, key: str) -> Predicate:
        if key in ("state", "exclude"):
            word = self.take("a state name").lower()
            states = _STATE_WORDS.get(word)
            if states is None:
                raise FilterError(f"unknown TCP state {word!r}; e.g. established, listening, time-wait, connected")
            states = frozenset(states)
            if key == "exclude":
                return lambda c: c.state not in states
            return lambda c: c.state in states
        if key in ("sport", "dport"):
            op = _COMPARE[self._op()]
            port = _port(self.take("a port"))
            attr = key
            return lambda c: op(getattr(c, attr), port)
        if key in ("src", "dst"):
            negate = self._op(("eq", "ne")) == "ne"
            match = _address(self.take("an address"))
            ip_attr, port_attr = (("src", "sport") if key == "src" else ("dst", "dport"))
            return lambda c: match(getattr(c, ip_attr), getattr(c, port_attr)) != negate
        if key in ("netns", "container", "process"):
            negate = self._op(("eq", "ne")) == "ne"
            name = self.take("a name")
            attr = key
            return lambda c: (getattr(c, attr) == name) != negate
        raise FilterError(f"unknown filter word {key!r}; expected state, sport, dport, src, dst, netns, "
                          f"container, process, and, or, not, ( )")


def parse(text: str | list[str]) -> Predicate:
    """Compile an ss-style filter (a string, or argv words joined) into a predicate."""
    if isinstance(text, (list, tuple)):
        text = " ".join(text)
    return _Parser(text).parse()
