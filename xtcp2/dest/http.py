"""http://HOST[:PORT]/PATH[?QUERY] and https://... - one POST per payload.

As upstream: the URL is used verbatim, each payload is one POST body, the Content-Type
follows -marshal (application/octet-stream for protobufList/msgpack, application/x-ndjson
for jsonl, text/csv ...), any non-2xx status is an error, and a keep-alive connection is
reused. One payload per request also suits ClickHouse's HTTP interface, whose
ProtobufList input takes one varint(len)+Envelope per INSERT:

    -dest 'http://127.0.0.1:8123/?query=INSERT%20INTO%20xtcp.xtcp_flat_records_ingest%20FORMAT%20ProtobufList&format_schema=xtcp_flat_record.proto%3AXtcpFlatRecord'
(xtcp2_clickhouse_http_insert --url http://127.0.0.1:8123 --dest prints it)

Our own options ride in the same query string and are removed before the request:
    timeout=S     per-request timeout (default -produceTimeout, or 10 s when that is 0)
    retries=N     how often a payload answered 5xx / 408 / 429 is tried again before it
                  is dropped, counted (default 10). An unreachable server is retried
                  with back-off until the queue overflows (the common queue options).
    caFile=PATH   https: CA bundle instead of the system store
plus the common queue options (queue, queueBytes, backoffMax, flushTimeout). A 4xx other
than 408/429 means the server will never take the payload: it is dropped and counted,
with the first line of the server's answer logged (ClickHouse's error text).

Basic auth comes from the environment, never the command line: XTCP2_HTTP_USER and
XTCP2_HTTP_PASSWORD, or XTCP2_HTTP_PASSWORD_FILE (a file holding it).
"""
from __future__ import annotations

import base64
import http.client
import os
import ssl
from urllib.parse import urlsplit

from ..errors import DestinationError
from .base import register
from .queued import Item, PermanentError, QueuedDestination, num_option, parse_options

OUR_OPTIONS = {"timeout", "retries", "caFile"}
QUEUE_OPTIONS = {"queue", "queueBytes", "backoffMax", "flushTimeout"}
CONTENT_TYPES = {
    "jsonl": "application/x-ndjson",
    "protoJson": "application/json",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "protoText": "text/plain; charset=utf-8",
}
RETRYABLE = {408, 429}


def split_query(query: str) -> tuple[str, str]:
    """Separate our options from the URL's own query; the URL's part stays verbatim
    (re-encoding could change what the server reads, e.g. a ClickHouse query)."""
    ours, theirs = [], []
    for part in query.split("&") if query else []:
        name = part.partition("=")[0]
        (ours if name in OUR_OPTIONS | QUEUE_OPTIONS else theirs).append(part)
    return "&".join(ours), "&".join(theirs)


def read_secret(name: str) -> str | None:
    """$NAME, else the contents of the file named by $NAME_FILE (trailing newline cut)."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as e:
        raise DestinationError(f"{name}_FILE {path}: {e.strerror or e}") from None


class HTTPDestinationBase(QueuedDestination):
    batch_max_items = 1   # one payload = one POST

    def __init__(self, address: str, config) -> None:
        url = f"{self.scheme}:{address}"
        base, _, query = url.partition("?")
        ours, theirs = split_query(query)
        opts = parse_options(self.scheme, ours, OUR_OPTIONS)
        super().__init__(url, config, opts)
        self.where = base
        parts = urlsplit(base)
        if not parts.hostname or not address.startswith("//"):
            raise DestinationError(f"{self.scheme}: bad URL {url!r}: expected {self.scheme}://host[:port]/path")
        try:
            port = parts.port
        except ValueError:
            raise DestinationError(f"{self.scheme}: bad port in {url!r}: expected 1..65535") from None
        self.host = parts.hostname
        self.port = port or (443 if self.scheme == "https" else 80)
        self.target = (parts.path or "/") + (f"?{theirs}" if theirs else "")
        default_timeout = config.kafka_produce_timeout or 10.0
        self.timeout = num_option(self.scheme, opts, "timeout", default_timeout, 0.1, float, maximum=3600.0)
        self.retries = num_option(self.scheme, opts, "retries", 10, 0, maximum=1_000_000)
        self.ca_file = opts.get("caFile", "")
        if self.ca_file and self.scheme != "https":
            raise DestinationError("http: caFile only applies to https")
        self.headers = {"Content-Type": CONTENT_TYPES.get(config.marshal_to, "application/octet-stream"),
                        "User-Agent": "xtcp2"}
        user, password = os.environ.get("XTCP2_HTTP_USER"), read_secret("XTCP2_HTTP_PASSWORD")
        if user or password:
            token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self._ssl = None
        if self.scheme == "https":
            try:
                self._ssl = ssl.create_default_context(cafile=self.ca_file or None)
            except (OSError, ssl.SSLError) as e:
                raise DestinationError(f"https: caFile {self.ca_file}: {e}") from None
        self._conn: http.client.HTTPConnection | None = None
        self._attempts = 0           # failed answers for the payload at the head
        self._attempt_item: Item | None = None
        self.start()

    def _connect(self) -> None:
        if self._ssl is not None:
            c = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._ssl)
        else:
            c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            c.connect()
        except (OSError, ssl.SSLError) as e:
            c.close()
            raise DestinationError(f"{self.where}: cannot connect: {getattr(e, 'strerror', None) or e}") from None
        self._conn = c

    def _deliver(self, batch: list[Item]) -> None:
        item = batch[0]
        if item is not self._attempt_item:
            self._attempt_item, self._attempts = item, 0
        try:
            self._conn.request("POST", self.target, body=item.payload, headers=self.headers)
            resp = self._conn.getresponse()
            body = resp.read(4096)
            if resp.will_close:
                self._disconnect()
                self._connected = False  # the next payload opens a new connection
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            raise DestinationError(f"{self.where}: {getattr(e, 'strerror', None) or e or type(e).__name__}") from None
        if 200 <= resp.status < 300:
            self._attempt_item = None
            return
        first = body.decode("utf-8", "replace").strip().splitlines()[:1]
        why = f"{self.where}: HTTP {resp.status} {resp.reason}" + (f": {first[0][:300]}" if first else "")
        if resp.status >= 500 or resp.status in RETRYABLE:
            self._attempts += 1
            if self._attempts > self.retries:
                self._attempt_item = None
                raise PermanentError(f"{why} (gave up after {self._attempts} attempts)")
            raise DestinationError(why)
        self._attempt_item = None
        raise PermanentError(why)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@register("http")
class HTTPDestination(HTTPDestinationBase):
    pass


@register("https")
class HTTPSDestination(HTTPDestinationBase):
    pass
