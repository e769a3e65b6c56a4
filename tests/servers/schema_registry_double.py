"""A TEST DOUBLE of Confluent Schema Registry's REST API. NOT the real registry.

No schema registry is installable here (not in PyPI, Debian or npm: Confluent's is a Java
distribution, Redpanda's and Karapace's are not packaged), so the schema registration
is tested against this double, written from Confluent's documented REST API
(https://docs.confluent.io/platform/current/schema-registry/develop/api.html):

  - requests and answers are JSON, Content-Type application/vnd.schemaregistry.v1+json
    (application/json accepted)
  - POST /subjects/{subject}/versions  {"schema": "...", "schemaType": "PROTOBUF"}
      -> 200 {"id": N}; the same schema text again returns the same id (and no new
      version); ids are global across subjects, versions count per subject from 1
      -> 422 {"error_code": 42201, "message": "Invalid schema"} for a schema that is
      empty or (PROTOBUF) has no `syntax`/`message`; 415 for another Content-Type
      -> 422 error_code 422 for an unknown schemaType (valid: AVRO, JSON, PROTOBUF)
  - GET /subjects -> ["subject", ...]
  - GET /subjects/{subject}/versions -> [1, 2, ...]
  - GET /subjects/{subject}/versions/latest|{version}
      -> {"subject", "id", "version", "schemaType", "schema"}; schemaType is omitted for
      AVRO as the real registry does; 404 {"error_code": 40401} unknown subject,
      404 {"error_code": 40402} unknown version
  - GET /schemas/ids/{id} -> {"schema": "...", "schemaType": ...}; 404 error_code 40403
  - Basic auth when a user is configured: 401 {"error_code": 401} otherwise
What it does not model: compatibility checks (every new schema is accepted as a new
version), references, modes, contexts, deletes, normalization beyond exact text.
"""
from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

CT = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryDouble:
    def __init__(self, port: int, user: str = "", password: str = "") -> None:
        self.port = port
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else ""
        self.schemas: dict[int, tuple[str, str]] = {}          # id -> (type, text)
        self.subjects: dict[str, list[int]] = {}               # subject -> ids by version
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "SchemaRegistryDouble":
        reg = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def _answer(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", CT)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                reg.requests.append((method, self.path))
                if reg.auth and self.headers.get("Authorization", "") != reg.auth:
                    return self._answer(401, {"error_code": 401, "message": "Unauthorized"})
                self._answer(*reg.route(method, self.path, self.headers.get("Content-Type", ""), body))

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _version_body(self, subject: str, version: int) -> dict:
        sid = self.subjects[subject][version - 1]
        stype, text = self.schemas[sid]
        out = {"subject": subject, "version": version, "id": sid, "schema": text}
        if stype != "AVRO":
            out["schemaType"] = stype
        return out

    def route(self, method: str, path: str, ctype: str, body: bytes) -> tuple[int, object]:
        with self.lock:
            m = re.fullmatch(r"/subjects/([^/]+)/versions", path)
            if m and method == "POST":
                if ctype.split(";")[0].strip() not in (CT, "application/json", "application/octet-stream"):
                    return 415, {"error_code": 415, "message": "Unsupported Media Type"}
                try:
                    req = json.loads(body)
                except ValueError:
                    return 400, {"error_code": 400, "message": "Unrecognized request body"}
                stype = req.get("schemaType", "AVRO")
                if stype not in ("AVRO", "JSON", "PROTOBUF"):
                    return 422, {"error_code": 422, "message": f"Invalid schemaType {stype}"}
                text = req.get("schema") or ""
                if not text or (stype == "PROTOBUF" and not ("syntax" in text and "message" in text)):
                    return 422, {"error_code": 42201, "message": "Invalid schema"}
                subject = unquote(m.group(1))
                for sid, (t, s) in self.schemas.items():
                    if (t, s) == (stype, text):
                        break
                else:
                    sid = len(self.schemas) + 1
                    self.schemas[sid] = (stype, text)
                versions = self.subjects.setdefault(subject, [])
                if sid not in versions:
                    versions.append(sid)
                return 200, {"id": sid}
            if method != "GET":
                return 405, {"error_code": 405, "message": "Method Not Allowed"}
            if path == "/subjects":
                return 200, sorted(self.subjects)
            m = re.fullmatch(r"/subjects/([^/]+)/versions(?:/(latest|\d+))?", path)
            if m:
                subject = unquote(m.group(1))
                if subject not in self.subjects:
                    return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                n = len(self.subjects[subject])
                if m.group(2) is None:
                    return 200, list(range(1, n + 1))
                v = n if m.group(2) == "latest" else int(m.group(2))
                if not 1 <= v <= n:
                    return 404, {"error_code": 40402, "message": f"Version {v} not found."}
                return 200, self._version_body(subject, v)
            m = re.fullmatch(r"/schemas/ids/(\d+)", path)
            if m:
                sid = int(m.group(1))
                if sid not in self.schemas:
                    return 404, {"error_code": 40403, "message": "Schema not found"}
                t, s = self.schemas[sid]
                return 200, {"schema": s, **({"schemaType": t} if t != "AVRO" else {})}
            return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
