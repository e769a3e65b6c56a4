"""Selection of live records by namespace, port and TCP state.

A stream client asks for it with the gRPC metadata entry `xtcp2-filter`, e.g.
"netns=ns1,port=443,state=established" (all given conditions must hold; `port` matches
the local or the peer port). Upstream clients send no such entry and get everything.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

METADATA_KEY = "xtcp2-filter"

TCP_STATES = {
    1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
    7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW-SYN-RECV",
    13: "BOUND-INACTIVE",
}
_STATE_BY_NAME = {v.replace("-", "").lower(): k for k, v in TCP_STATES.items()}
_STATE_BY_NAME.update(established=1)


def parse_state(text: str) -> int:
    key = text.replace("-", "").replace("_", "").strip().lower()
    if key.isdigit() and 1 <= int(key) <= 13:
        return int(key)
    if key in _STATE_BY_NAME:
        return _STATE_BY_NAME[key]
    raise ConfigError("state", f"unknown TCP state {text!r}; e.g. established, listen, time-wait or 1..13")


@dataclass(frozen=True)
class RecordFilter:
    netns: str | None = None
    port: int | None = None
    state: int | None = None

    @classmethod
    def parse(cls, spec: str) -> "RecordFilter":
        values: dict[str, object] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ("netns", "port", "state"):
                raise ConfigError("filter", f"expected netns=NAME, port=N or state=NAME, got {part!r}")
            if key == "port":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise ConfigError("port", f"not a port number: {value!r}")
                values["port"] = int(value)
            elif key == "state":
                values["state"] = parse_state(value)
            else:
                values["netns"] = value
        return cls(**values)

    def __bool__(self) -> bool:
        return not (self.netns is None and self.port is None and self.state is None)

    def spec(self) -> str:
        parts = []
        if self.netns is not None:
            parts.append(f"netns={self.netns}")
        if self.port is not None:
            parts.append(f"port={self.port}")
        if self.state is not None:
            parts.append(f"state={self.state}")
        return ",".join(parts)

    def mask(self, cols: dict):
        """Rows that match, over columns netns (object), state, sport, dport (numpy)."""
        import numpy as np

        keep = np.ones(len(cols["state"]), bool)
        if self.netns is not None:
            keep &= cols["netns"] == self.netns
        if self.port is not None:
            keep &= (cols["sport"] == self.port) | (cols["dport"] == self.port)
        if self.state is not None:
            keep &= cols["state"] == self.state
        return keep

    def __call__(self, r) -> bool:
        if self.netns is not None and r.netns != self.netns:
            return False
        if self.port is not None and self.port not in (r.inet_diag_msg_socket_source_port,
                                                        r.inet_diag_msg_socket_destination_port):
            return False
        return self.state is None or r.inet_diag_msg_state == self.state
