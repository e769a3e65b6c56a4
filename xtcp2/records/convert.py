"""XtcpFlatRecord -> plain dict / JSON line, for the text formats.

The ONE JSON dialect of xtcp2 (daemon jsonl and protoJson, `xtcp2 decode`,
`xtcp2client -json`), documented in README "JSON dialect":
- keys are protojson's lowerCamelCase names (upstream's jsonl/protoJson keys);
- only set (non-zero) fields appear, as proto3 and protojson write them;
- numbers are JSON numbers, 64-bit ones too (protojson would quote them);
- addresses are text ("10.0.0.5", "::1"), not base64: a JSON reader cannot use raw bytes;
- enums (trigger, congestionAlgorithmEnum) are their names, as protojson writes them;
- inetDiagMsgState / tcpInfoState stay numbers (the kernel's value, what ClickHouse's
  UInt32 columns and upstream's jsonl hold), and each is followed by its name for
  people: inetDiagMsgStateName / tcpInfoStateName ("ESTABLISHED", "TIME_WAIT"...;
  readers that ignore unknown keys, as ClickHouse's JSONEachRow does, are unaffected).
Human formats (humanize, csv, tsv) go further: see xtcp2/marshal/human.py.
"""
from __future__ import annotations

import ipaddress
import json

from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb

# TCP state names as upstream's recordfmt and the human formats print them (tcp_states.h)
STATE_NAMES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
    7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}
_STATE_KEYS = (("inetDiagMsgState", "inetDiagMsgStateName"), ("tcpInfoState", "tcpInfoStateName"))
ADDRESS_FIELDS = frozenset({"inet_diag_msg_socket_source", "inet_diag_msg_socket_destination"})
_DESC = pb.XtcpFlatRecord.DESCRIPTOR
_ENUMS = {f.name: {v.number: v.name for v in f.enum_type.values}
          for f in _DESC.fields if f.enum_type is not None}


def address_to_str(raw: bytes) -> str:
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return raw.hex()


def record_to_dict(rec: pb.XtcpFlatRecord, json_names: bool = False, enum_names: bool = True) -> dict:
    """Set fields of `rec`; keys are proto names (snake_case) or protojson's lowerCamelCase."""
    out = {}
    for fd, value in rec.ListFields():
        name = fd.name
        if name in ADDRESS_FIELDS:
            value = address_to_str(value)
        elif enum_names and name in _ENUMS:
            value = _ENUMS[name].get(value, value)
        out[fd.json_name if json_names else name] = value
    return out


def record_to_json(rec: pb.XtcpFlatRecord) -> str:
    """One record in xtcp2's JSON dialect, compact, no newline."""
    d = record_to_dict(rec, json_names=True)
    if "inetDiagMsgState" in d or "tcpInfoState" in d:
        out = {}
        for k, v in d.items():
            out[k] = v
            for num, name in _STATE_KEYS:
                if k == num:
                    out[name] = STATE_NAMES.get(v, str(v))
        d = out
    return json.dumps(d, separators=(",", ":"))
