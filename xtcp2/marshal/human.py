"""Human-readable record values and the column set, shared by humanize, csv and tsv.

Values as a person reads them, as upstream's recordfmt humanizes: addresses as text,
TCP states by name (ESTABLISHED, TIME_WAIT...), the congestion algorithm without its
enum prefix, timestamp_ns as RFC 3339 (UTC). Further than upstream: RTT fields are
milliseconds, and their column is named with an `Ms` suffix (tcpInfoRttMs) so a number
is never read in the wrong unit. Columns are the record's protojson names in proto
order; `-columns` picks a subset by those names.
"""
from __future__ import annotations

import datetime

from ..errors import ConfigError
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..records.convert import ADDRESS_FIELDS, STATE_NAMES, address_to_str
STATE_FIELDS = frozenset({"inet_diag_msg_state", "tcp_info_state"})
# microseconds in the record, milliseconds in human formats
RTT_FIELDS = frozenset({"tcp_info_rtt", "tcp_info_rtt_var", "tcp_info_rcv_rtt", "tcp_info_min_rtt",
                        "vegas_info_rtt", "vegas_info_min_rtt", "bbr_info_min_rtt"})

_FIELDS = list(pb.XtcpFlatRecord.DESCRIPTOR.fields)           # proto declaration order
_BY_JSON = {f.json_name: f for f in _FIELDS}
_ENUMS = {f.name: {v.number: v.name for v in f.enum_type.values} for f in _FIELDS if f.enum_type is not None}


def header_name(fd) -> str:
    return fd.json_name + "Ms" if fd.name in RTT_FIELDS else fd.json_name


def select_columns(spec: str) -> list:
    """'-columns' spec (comma list of protojson names; empty = all) -> field descriptors."""
    names = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not names:
        return list(_FIELDS)
    out = []
    for name in names:
        fd = _BY_JSON.get(name[:-2] if name.endswith("Ms") and name[:-2] in _BY_JSON else name)
        if fd is None:
            raise ConfigError("columns", f"unknown column {name!r} (an XtcpFlatRecord json name, e.g. "
                                         "hostname,inetDiagMsgSocketSourcePort,inetDiagMsgState,tcpInfoRtt)")
        out.append(fd)
    return out


def human_value(fd, value):
    """One field's value for a person (None: leave the field out)."""
    name = fd.name
    if name in ADDRESS_FIELDS:
        return address_to_str(value) if value else ""
    if name in STATE_FIELDS:
        return STATE_NAMES.get(value, str(value))
    if name in RTT_FIELDS:
        return value / 1000.0
    if name == "congestion_algorithm_enum":
        return "" if value == 0 else _ENUMS[name].get(value, str(value)).removeprefix("CONGESTION_ALGORITHM_")
    if name == "trigger":
        return _ENUMS[name].get(value, str(value)).removeprefix("TRIGGER_")
    if name == "timestamp_ns":
        if value <= 0:
            return ""
        t = datetime.datetime.fromtimestamp(value // 1_000_000_000, datetime.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{value % 1_000_000_000:09d}Z"
    if fd.enum_type is not None:
        return _ENUMS[name].get(value, value)
    return value


def human_dict(rec: pb.XtcpFlatRecord) -> dict:
    """Set fields only (as the JSON formats), humanized, keyed by header names."""
    return {header_name(fd): human_value(fd, v) for fd, v in rec.ListFields()}


def human_row(rec: pb.XtcpFlatRecord, columns: list) -> list:
    """Every selected column, set or not (a table has no holes)."""
    return [human_value(fd, getattr(rec, fd.name)) for fd in columns]
