"""A small client for a Confluent-compatible schema registry (Confluent Schema Registry,
Redpanda, Karapace, Apicurio's ccompat API): register the record .proto under the
subject "<topic>-value", as upstream does, and read back the latest id.

Documented REST API used (https://docs.confluent.io/platform/current/schema-registry/develop/api.html):
    POST /subjects/{subject}/versions      {"schemaType": "PROTOBUF", "schema": "..."} -> {"id": N}
    GET  /subjects/{subject}/versions/latest                     -> {"id": N, "version": V, ...}
Errors come back as {"error_code": 40401, "message": "..."}. Basic auth (Confluent Cloud,
secured registries) from XTCP2_SCHEMA_REGISTRY_USER and XTCP2_SCHEMA_REGISTRY_PASSWORD
(or ..._PASSWORD_FILE), never from the command line.
"""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..errors import DestinationError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def default_proto_file() -> str:
    """The packaged (or checked-out) xtcp_flat_record.proto."""
    from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
    here = Path(__file__).resolve().parents[2] / "proto" / "xtcp_flat_record" / "v1" / "xtcp_flat_record.proto"
    for p in (here, Path(pb.__file__).with_name("xtcp_flat_record.proto")):
        if p.is_file():
            return str(p)
    raise DestinationError("schema registry: cannot find xtcp_flat_record.proto; give -xtcpProtoFile")


def _secret(name: str) -> str:
    v = os.environ.get(name, "")
    if v or not os.environ.get(f"{name}_FILE"):
        return v
    try:
        return Path(os.environ[f"{name}_FILE"]).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise DestinationError(f"{name}_FILE: {e.strerror or e}") from None


class SchemaRegistry:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DestinationError(f"schema registry URL {url!r} must look like http(s)://host:port")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
        user, password = os.environ.get("XTCP2_SCHEMA_REGISTRY_USER", ""), _secret("XTCP2_SCHEMA_REGISTRY_PASSWORD")
        if user:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())
                why = f"{err.get('error_code', e.code)} {err.get('message', '')}"
            except ValueError:
                why = f"HTTP {e.code}"
            raise DestinationError(f"schema registry {method} {path}: {why}") from None
        except (OSError, ValueError) as e:
            raise DestinationError(f"schema registry {self.url}: {getattr(e, 'reason', None) or e}") from None

    def register(self, subject: str, schema: str) -> int:
        """Register (idempotent: the same schema gets the same id back); returns the id."""
        out = self._call("POST", f"/subjects/{quote(subject, safe='')}/versions",
                         {"schemaType": "PROTOBUF", "schema": schema})
        if not isinstance(out.get("id"), int):
            raise DestinationError(f"schema registry: no id in the answer {out!r}")
        return out["id"]

    def latest_id(self, subject: str) -> int:
        out = self._call("GET", f"/subjects/{quote(subject, safe='')}/versions/latest")
        if not isinstance(out.get("id"), int):
            raise DestinationError(f"schema registry: no id in the answer {out!r}")
        return out["id"]


def register_record_schema(url: str, topic: str, proto_file: str = "") -> int:
    """Register the record .proto as "<topic>-value"; returns the schema id."""
    path = proto_file or default_proto_file()
    try:
        schema = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DestinationError(f"-xtcpProtoFile {path}: {e.strerror or e}") from None
    return SchemaRegistry(url).register(f"{topic}-value", schema)
