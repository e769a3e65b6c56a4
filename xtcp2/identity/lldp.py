"""LLDP neighbours of the uplinks, from the local lldpd (Debian package `lldpd`).

We ask lldpd through its own client, `lldpcli -u SOCKET -f json0 show neighbors`, run
with an argument list (no shell), a minimal environment and a timeout. lldpd's control
socket speaks an internal protocol: a serialisation of lldpd's C structures (pointer
graphs, padding, pointer-sized fields) whose layout changes between releases, which is
why upstream needs `-lldpdVersionHint` and per-version captures. lldpcli comes in the
same package as the daemon, so it always speaks the daemon's version; `json0` is its
stable JSON shape (lists everywhere, whatever the neighbour count).

Everything that comes back is validated: a neighbour's strings are printable and
bounded, the management address parses as an IP address.
"""
from __future__ import annotations

import ipaddress
import json
import os
import stat
from dataclasses import dataclass

from .nic import MAX_TEXT, valid_ifname

DEFAULT_SOCKET = "/run/lldpd.socket"
MAX_OUTPUT = 4 << 20  # lldpcli's reply for a few uplinks is a few KiB
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@dataclass(frozen=True)
class Neighbor:
    ifname: str           # our interface the neighbour was heard on
    chassis_name: str     # the switch's SysName
    chassis_id: str       # as lldpcli prints it (a MAC for subtype mac)
    mgmt_ip: str          # first management address, IPv4 preferred
    port_id: str          # the switch port (subtype ifname, mac, local ...)
    port_descr: str


class LldpError(Exception):
    """One-line reason; `kind` labels the error metric (socket, cli, timeout, exit, parse)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def find_lldpcli() -> str | None:
    """The operator's PATH first (NixOS keeps it outside /usr), then Debian's places."""
    import shutil  # here: only -enrichLldp needs it (start-up of everything else)
    return shutil.which("lldpcli") or shutil.which("lldpcli", path=_ENV["PATH"])


def fetch_neighbors(socket_path: str = DEFAULT_SOCKET, timeout: float = 2.0,
                    lldpcli: str | None = None) -> dict[str, Neighbor]:
    """Interface name -> its first LLDP neighbour. Raises LldpError."""
    try:
        st = os.stat(socket_path)
    except OSError as e:
        raise LldpError("socket", f"lldpd socket {socket_path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise LldpError("socket", f"lldpd socket {socket_path}: not a unix socket")
    cli = lldpcli or find_lldpcli()
    if not cli:
        present = [p for p in (os.path.join(d, "lldpcli") for d in _ENV["PATH"].split(":")) if os.path.exists(p)]
        if present:  # Debian ships it 4750 _lldpd:adm
            raise LldpError("cli", f"{present[0]} is not executable by this process (needs group adm, or root "
                                   "with CAP_DAC_OVERRIDE)")
        raise LldpError("cli", "lldpcli not found (Debian package lldpd)")
    import subprocess
    try:
        r = subprocess.run([cli, "-u", socket_path, "-f", "json0", "show", "neighbors"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=_ENV)
    except subprocess.TimeoutExpired:
        raise LldpError("timeout", f"lldpcli gave no answer within {timeout:g}s") from None
    except OSError as e:
        raise LldpError("cli", f"lldpcli: {e.strerror}") from None
    if r.returncode != 0:
        why = r.stderr.decode("utf-8", "replace").strip().splitlines()
        raise LldpError("exit", f"lldpcli exit {r.returncode}: {why[-1][:200] if why else 'no message'}")
    if len(r.stdout) > MAX_OUTPUT:
        raise LldpError("parse", f"lldpcli reply larger than {MAX_OUTPUT} bytes")
    return parse_neighbors(r.stdout.decode("utf-8", "replace"))


def parse_neighbors(text: str) -> dict[str, Neighbor]:
    """Parse `lldpcli -f json0 show neighbors`. Raises LldpError("parse") if malformed."""
    if not text.strip():
        return {}  # lldpcli prints nothing while lldpd has not finished starting
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise LldpError("parse", f"lldpcli reply is not JSON: {e}") from None
    out: dict[str, Neighbor] = {}
    try:
        for block in _list(doc, "lldp"):
            for iface in _list(block, "interface"):
                name = iface.get("name")
                if not isinstance(name, str) or not valid_ifname(name) or name in out:
                    continue  # several neighbours on one port: the first one names it
                chassis = _first(iface, "chassis")
                port = _first(iface, "port")
                out[name] = Neighbor(
                    ifname=name,
                    chassis_name=_value(chassis, "name"),
                    chassis_id=_value(chassis, "id"),
                    mgmt_ip=_mgmt_ip(chassis),
                    port_id=_value(port, "id"),
                    port_descr=_value(port, "descr"),
                )
    except (AttributeError, TypeError) as e:
        raise LldpError("parse", f"unexpected lldpcli JSON shape: {e}") from None
    return out


def _list(obj, key: str) -> list:
    if not isinstance(obj, dict):
        raise TypeError(f"expected an object holding {key!r}")
    v = obj.get(key, [])
    if not isinstance(v, list):
        raise TypeError(f"{key!r} is not a list (not json0 output?)")
    return [x for x in v if isinstance(x, dict)]


def _first(obj, key: str) -> dict:
    items = _list(obj, key)
    return items[0] if items else {}


def _values(obj: dict, key: str) -> list[str]:
    return [_clean(x["value"]) for x in _list(obj, key) if isinstance(x.get("value"), str)]


def _value(obj: dict, key: str) -> str:
    vals = _values(obj, key)
    return vals[0] if vals else ""


def _mgmt_ip(chassis: dict) -> str:
    addrs = []
    for v in _values(chassis, "mgmt-ip"):
        try:
            addrs.append(ipaddress.ip_address(v))
        except ValueError:
            continue
    addrs.sort(key=lambda a: a.version)  # stable: IPv4 first, then lldpd's order
    return str(addrs[0]) if addrs else ""


def _clean(text: str) -> str:
    return "".join(ch for ch in text.strip() if ch.isprintable())[:MAX_TEXT]
