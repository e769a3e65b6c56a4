"""XTCP_CONFIG_JSON: Config changes from an XtcpConfig in protojson (upstream's format)."""
from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from ..config import FIELDS
from ..config_sources import CONFIG_JSON, EnvValueError
from ..errors import ConfigError
from ..gen.xtcp_config.v1 import xtcp_config_pb2 as pb
from . import config_proto as cp


def config_json(text: str) -> dict[str, Any]:
    """Config changes from an XtcpConfig in protojson: only the fields the JSON names.

    Fields mean what they mean in a gRPC Set (xtcp2.api.config_proto); an unknown key, a
    wrong type or an upstream feature xtcp2 lacks is a one-line error naming the variable.
    """
    def bad(msg: str) -> EnvValueError:
        return EnvValueError(CONFIG_JSON, msg)

    try:
        obj = json.loads(text)
    except ValueError as e:
        raise bad(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise bad("must be a JSON object (an XtcpConfig in protojson)")
    msg = pb.XtcpConfig()
    try:
        json_format.ParseDict(obj, msg)
    except json_format.ParseError as e:
        raise bad(str(e).splitlines()[0]) from None
    by_key = {}
    for fd in pb.XtcpConfig.DESCRIPTOR.fields:
        by_key[fd.name] = by_key[fd.json_name] = fd
    changes: dict[str, Any] = {}
    for key in obj:
        fd = by_key[key]  # ParseDict refused unknown keys
        name = fd.name
        if name in cp.READ_ONLY_FIELDS or name in cp.IGNORED_TUNING:
            continue
        if name not in FIELDS:
            raise bad(f"{name}: not supported by xtcp2; leave it out")
        value = getattr(msg, name)
        try:
            if cp._is_duration(fd):
                value = cp.duration_to_seconds(value, name)
            elif cp._is_deserializers(fd):
                value = cp._deserializers_from_proto(value, ())
            elif cp._is_repeated(fd):
                value = list(value)
        except ConfigError as e:
            raise bad(str(e)) from None
        changes[name] = value
    return changes
