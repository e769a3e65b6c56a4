"""A TEST DOUBLE of clickhouse-server's HTTP interface, backed by the REAL ClickHouse
engine (chdb). NOT clickhouse-server: none is installable here (not in PyPI, Debian or
npm); chdb is ClickHouse itself, in-process, but has no HTTP front end.

What it models, from ClickHouse's documented HTTP interface
(https://clickhouse.com/docs/interfaces/http):
  - POST / with the statement in the `query` URL parameter and the data as the body;
    other URL parameters are settings (format_schema=...)
  - `INSERT INTO db.t [(cols)] SELECT ... FROM input('structure') FORMAT ProtobufList`
    and `INSERT INTO db.t [SETTINGS ...] FORMAT ProtobufList`; the body is handed to the
    engine as a ProtobufList file, so the engine's own decoder decides what is valid
    (one varint(len)+Envelope per insert, as the real server)
  - format_schema='file.proto:Message' is resolved in a format_schemas directory, as the
    server resolves it in /var/lib/clickhouse/format_schemas
  - 200 with an empty body on success; an engine error is HTTP 400 with ClickHouse's
    "Code: N. DB::Exception: ..." text; Basic auth checked when a user is configured
It does not model: GET queries, sessions, compression, async inserts, other formats.
It can be told to answer the next N inserts with 503 (fail_next), to test retries.
"""
from __future__ import annotations

import base64
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

INSERT_RE = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+ProtobufList\s*$", re.I | re.S)
INPUT_RE = re.compile(r"input\(\s*('(?:[^'\\]|\\.)*')\s*\)", re.I)
TABLE_RE = re.compile(r"^(INSERT\s+INTO\s+[\w.`]+(?:\s*\([^)]*\))?)\s*(?:SETTINGS\s+(.*))?$", re.I | re.S)


class ClickHouseHTTPDouble:
    def __init__(self, session, schema_dir: str, port: int, user: str = "", password: str = "") -> None:
        self.sess, self.schema_dir, self.port = session, schema_dir, port
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else ""
        self.lock = threading.Lock()
        self.tmp = tempfile.mkdtemp(prefix="outputs-chhttp-")
        self.inserts = 0
        self.columns: dict[str, list[str]] = {}
        self.fail_next = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "ClickHouseHTTPDouble":
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, text = double.handle(self.path, self.headers.get("Authorization", ""), body)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def kill(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def handle(self, path: str, auth: str, body: bytes) -> tuple[int, str]:
        if self.auth and auth != self.auth:
            return 401, "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)\n"
        params = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        m = INSERT_RE.match(params.get("query", ""))
        if not m:
            return 400, "Code: 62. DB::Exception: the double only takes INSERT ... FORMAT ProtobufList. (SYNTAX_ERROR)\n"
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)\n"
            f = Path(self.tmp, "body.bin")
            f.write_bytes(body)
            schema = params.get("format_schema", "")
            file_fn = lambda structure: f"file('{f}', 'ProtobufList'" + (f", {structure})" if structure else ")")
            stmt = m.group(1)
            if INPUT_RE.search(stmt):
                stmt = INPUT_RE.sub(lambda mm: file_fn(mm.group(1)), stmt)
                settings = ""
            else:
                t = TABLE_RE.match(stmt)
                if not t:
                    return 400, "Code: 62. DB::Exception: cannot parse the INSERT. (SYNTAX_ERROR)\n"
                # the server reads the body with the target table's structure
                table = re.sub(r"^INSERT\s+INTO\s+", "", t.group(1), flags=re.I).strip().strip("`")
                db, _, name = table.rpartition(".")
                if table not in self.columns:   # the engine's catalogue, read once per table
                    self.columns[table] = self.sess.query(
                        f"SELECT name, type FROM system.columns WHERE database = '{db or 'default'}' "
                        f"AND table = '{name}' AND default_kind = '' ORDER BY position",
                        "TSVRaw").bytes().decode().strip().splitlines()
                cols = self.columns[table]
                structure = "'" + ", ".join(c.replace("\t", " ") for c in cols).replace("\\", "\\\\").replace("'", "\\'") + "'"
                names = ", ".join(c.split("\t")[0] for c in cols)
                stmt, settings = f"{t.group(1)} ({names}) SELECT * FROM {file_fn(structure)}", t.group(2) or ""
                fs = re.search(r"format_schema\s*=\s*'([^']*)'", settings)
                if fs:
                    schema = fs.group(1)
                    settings = re.sub(r",?\s*format_schema\s*=\s*'[^']*'", "", settings).strip(" ,")
            if schema:
                settings = ", ".join(x for x in (settings, f"format_schema = '{self.schema_dir}/{schema}'") if x)
            try:
                self.sess.query(stmt + (f" SETTINGS {settings}" if settings else ""))
            except Exception as e:  # noqa: BLE001 - the engine's error goes back as the server's would
                return 400, f"{str(e).strip().splitlines()[0]}\n"
            self.inserts += 1
        return 200, ""
