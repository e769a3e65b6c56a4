"""XtcpFlatRecord -> plain dict, for the text formats (jsonl, protoJson, msgpack).

Only set (non-zero) fields appear, as proto3 would serialize them. Addresses become
strings ("10.0.0.5", "::1") because a JSON reader cannot use raw bytes.
"""
from __future__ import annotations

import ipaddress

from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb

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
