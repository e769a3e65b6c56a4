"""Parser for the text `ss --tcp --info -a` prints (iproute2 misc/ss.c), for tests.

Each socket is one line (state, queues, addresses, then `key:value` details such as
timer, ino, sk, tos) followed by a tab-indented info line (skmem, option flags, the
congestion algorithm name, `key:value` tcp_info figures and a few `name value` rates).
Values are kept as the exact text ss printed, so tests compare strings produced with
the same printf formats ss uses, not floats.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

# ss state names -> kernel TCP state numbers (include/net/tcp_states.h)
SS_STATES = {
    "ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
    "TIME-WAIT": 6, "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10,
    "CLOSING": 11,
}
# bare words ss prints on the info line that are not the congestion algorithm
FLAG_WORDS = frozenset({"ts", "sack", "ecn", "ecnseen", "fastopen", "app_limited", "bidir"})
# words followed by a separate value token
VALUE_WORDS = frozenset({"send", "pacing_rate", "delivery_rate"})
# first-line markers that carry no value
_SHUTDOWN = {"<->": 0, "-->": 1, "<--": 2, "---": 3}
_GROUP = re.compile(r"^(\w+):\((.*)\)$")


@dataclass
class SsSocket:
    state: int
    recv_q: int
    send_q: int
    local_addr: str          # as printed, without brackets ("*" = any)
    local_port: int
    peer_addr: str
    peer_port: int           # 0 for "*"
    details: dict[str, str] = field(default_factory=dict)   # first line key:value (timer, ino, sk, tos, ...)
    shutdown: int | None = None                             # from "<->" and friends
    info: dict[str, str] = field(default_factory=dict)      # info line key:value and rate words
    flags: set[str] = field(default_factory=set)
    cong: str | None = None
    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # skmem, bbr, dctcp, mem: parsed (...)
    line: int = 0

    @property
    def family(self) -> int | None:
        """4 or 6 from the printed address; None when ss printed "*"."""
        if self.local_addr == "*":
            return None
        addr = ipaddress.ip_address(self.local_addr)
        return 6 if addr.version == 6 else 4


def _split_endpoint(text: str) -> tuple[str, int]:
    addr, _, port = text.rpartition(":")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    addr = addr.split("%", 1)[0]  # fe80::1%eth0
    return addr, 0 if port == "*" else int(port)


def _parse_group(body: str) -> dict[str, str]:
    """"r0,rb1000000,t0" -> {"r": "0", "rb": "1000000", ...}; "bw:1bps,mrtt:0.02" -> key:value."""
    out = {}
    for part in body.split(","):
        if ":" in part:
            k, _, v = part.partition(":")
        else:
            m = re.match(r"^([a-z_]+)(.*)$", part)
            if not m:
                raise ValueError(f"unparsable group item {part!r}")
            k, v = m.group(1), m.group(2)
        out[k] = v
    return out


def _parse_details(sock: SsSocket, tokens: list[str]) -> None:
    for tok in tokens:
        if tok in _SHUTDOWN:
            sock.shutdown = _SHUTDOWN[tok]
        elif tok.startswith("users:("):
            continue
        elif ":" in tok:
            k, _, v = tok.partition(":")
            # "cgroup:" appears twice (before and after "<->"); both show the same path
            sock.details.setdefault(k, v)


def _parse_info(sock: SsSocket, tokens: list[str]) -> None:
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok in VALUE_WORDS:
            sock.info[tok] = tokens[i]
            i += 1
            continue
        m = _GROUP.match(tok)
        if m:
            sock.groups[m.group(1)] = _parse_group(m.group(2))
            continue
        if ":" in tok:
            k, _, v = tok.partition(":")
            sock.info[k] = v
        elif tok in FLAG_WORDS:
            sock.flags.add(tok)
        elif sock.cong is None:
            sock.cong = tok
        else:
            raise ValueError(f"second bare word {tok!r} after congestion {sock.cong!r}")
        # "dctcp:fallback_mode" is a key:value with a word value; nothing special


def parse_ss(text: str) -> list[SsSocket]:
    """All sockets in one `ss --tcp --info -a` output."""
    sockets: list[SsSocket] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("State"):
            continue
        if line[0] in " \t":
            if not sockets:
                raise ValueError(f"line {lineno}: info line before any socket")
            _parse_info(sockets[-1], line.split())
            continue
        tokens = line.split()
        if tokens[0] not in SS_STATES:
            raise ValueError(f"line {lineno}: unknown state {tokens[0]!r}")
        laddr, lport = _split_endpoint(tokens[3])
        paddr, pport = _split_endpoint(tokens[4])
        sock = SsSocket(SS_STATES[tokens[0]], int(tokens[1]), int(tokens[2]), laddr, lport, paddr, pport,
                        line=lineno)
        _parse_details(sock, tokens[5:])
        sockets.append(sock)
    return sockets


def print_ms_timer(timeout: int) -> str:
    """ss's print_ms_timer(): 5485 -> "5.485ms", 48000 -> "48sec", 61000 -> "1min1sec"."""
    secs = timeout // 1000
    minutes = secs // 60
    secs %= 60
    msecs = timeout % 1000
    out = ""
    if minutes:
        msecs = 0
        out = f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        out += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        out += f"{msecs:03d}ms"
    return out


def fmt_g(value: float) -> str:
    """C printf "%g", as ss uses for rtt, rto, ato, minrtt, ..."""
    return "%g" % value
