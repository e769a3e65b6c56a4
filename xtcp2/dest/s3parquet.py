"""s3parquet: rows as Parquet objects in S3 (or files in a local directory), laid out as
upstream lays them out.

Addresses (upstream's first; the flags fill in what the address leaves out):
    s3parquet:                                 endpoint -s3Endpoint / S3_ENDPOINT
    s3parquet:http://127.0.0.1:8333            endpoint after the scheme, as upstream
    s3parquet:s3://BUCKET/PREFIX?endpoint=URL  bucket and prefix in the address
    s3parquet:/var/lib/xtcp2/parquet           local-directory mode (same layout)
Bucket: -s3Bucket / S3_BUCKET (or s3://BUCKET); prefix -s3Prefix / S3_PREFIX; region
-s3Region / S3_REGION (default us-east-1). Credentials never come from the command
line: S3_ACCESS_KEY / S3_SECRET_KEY, or S3_ACCESS_KEY_FILE / S3_SECRET_KEY_FILE (files
holding them), else boto3's usual chain (AWS_ACCESS_KEY_ID, ~/.aws, instance roles).

Object keys, as upstream (readers partition on them):
    PREFIX/host=HOSTNAME/date=YYYY-MM-DD/hour=HH/<unix seconds>_<8 hex>.parquet
with the hostname reduced to [A-Za-z0-9._-]. A retried upload reuses its key, so a
retry never leaves two copies. Columns: one per XtcpFlatRecord field, named like the
proto field (uint32 -> uint32, bytes -> binary, enums -> int32), plus upstream's derived
`event_date` (UTC date of timestamp_ns, a string, after `location`).

When an object is cut (upstream's knobs):
    -s3ParquetFlushBytes   bytes of protobuf input per object (0 = 63 MiB); each object
                           finalizes at threshold * (1 - rand[0, -s3FlushThresholdJitterPct/100])
    -s3FlushInterval       at the latest this long after its first row (0 = max(-frequency,
                           30m)), jittered by +-(-s3FlushJitterPct/2) percent
Both apply at run time when changed over gRPC (SetS3Upload). Upload failures are
retried -s3UploadMaxAttempts times in all (0 = 10) with full-jitter exponential back-off
(window 1 s << attempt, capped by -s3UploadBackoffCap, 0 = clamp(-frequency/10, 1s, 1h)),
then the object's rows are dropped and counted. The start-up HeadBucket probe (needs
s3:ListBucket) is skipped with -s3SkipBucketProbe / S3_SKIP_BUCKET_PROBE=true; a missing
bucket is reported and retried like an unreachable server.

Address options (override the flags for this destination): endpoint, region,
compression zstd|snappy|gzip|none (default zstd), rollRows (no row cap by default),
rollBytes, rollSeconds, plus the common queue options. Needs -marshal protobufList.
"""
from __future__ import annotations

import io
import os
import random
import re
import secrets
import threading
import time

from ..errors import DestinationError
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..marshal.protobuf_list import unmarshal
from .base import register
from .queued import Item, PermanentError, QueuedDestination, num_option, parse_options

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from google.protobuf.descriptor import FieldDescriptor as FD
except ImportError as e:
    raise ImportError("pyarrow (pip install 'xtcp2[s3]')") from e

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ENDPOINT_RE = re.compile(r"^https?://[^/\s?#]+/?$")
COMPRESSIONS = ("zstd", "snappy", "gzip", "none")
DEFAULT_FLUSH_BYTES = 63 << 20          # upstream's S3ParquetFlushThresholdBytesCst
FLUSH_INTERVAL_FLOOR = 30 * 60.0        # upstream's s3FlushIntervalFloorCst
DEFAULT_MAX_ATTEMPTS = 10
BACKOFF_BASE, BACKOFF_CAP_MIN, BACKOFF_CAP_MAX = 1.0, 1.0, 3600.0
_ARROW = {FD.TYPE_UINT32: pa.uint32(), FD.TYPE_UINT64: pa.uint64(), FD.TYPE_INT64: pa.int64(),
          FD.TYPE_INT32: pa.int32(), FD.TYPE_STRING: pa.string(), FD.TYPE_BYTES: pa.binary(),
          FD.TYPE_ENUM: pa.int32(), FD.TYPE_BOOL: pa.bool_(), FD.TYPE_DOUBLE: pa.float64(),
          FD.TYPE_FLOAT: pa.float32(), FD.TYPE_FIXED64: pa.uint64(), FD.TYPE_FIXED32: pa.uint32()}
FIELDS = [(f.name, _ARROW[f.type]) for f in pb.XtcpFlatRecord.DESCRIPTOR.fields]
_EVENT_DATE_AT = [n for n, _ in FIELDS].index("location") + 1
SCHEMA = pa.schema(FIELDS[:_EVENT_DATE_AT] + [("event_date", pa.string())] + FIELDS[_EVENT_DATE_AT:])


def envelopes_to_table(payloads: list[bytes]) -> pa.Table:
    """protobufList payloads -> one Arrow table: a column per proto field, and event_date."""
    rows = []
    for p in payloads:
        for body in unmarshal(p):
            rows.extend(pb.Envelope.FromString(body).row)
    cols = [pa.array([getattr(r, name) for r in rows], type=t) for name, t in FIELDS]
    ts = cols[[n for n, _ in FIELDS].index("timestamp_ns")]
    event_date = pc.strftime(ts.cast(pa.timestamp("ns", tz="UTC")), format="%Y-%m-%d")
    cols.insert(_EVENT_DATE_AT, event_date)
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def host_segment(hostname: str) -> str:
    """Upstream's sanitizeHostnameForS3Key: [A-Za-z0-9._-] only, no '..', never empty."""
    out = re.sub(r"[^A-Za-z0-9._-]", "_", hostname.encode("utf-8", "replace").decode("ascii", "replace"))
    while ".." in out:
        out = out.replace("..", "_")
    return out or "unknown"


def object_key(prefix: str, hostname: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    t = time.gmtime(now)
    parts = [prefix.strip("/"), f"host={host_segment(hostname)}", time.strftime("date=%Y-%m-%d", t),
             time.strftime("hour=%H", t), f"{int(now)}_{secrets.token_hex(4)}.parquet"]
    return "/".join(p for p in parts if p)


def env_or_file(name: str) -> str:
    """$NAME, else the contents of the file $NAME_FILE names (upstream's *_FILE)."""
    value = os.environ.get(name, "")
    if value:
        return value
    path = os.environ.get(f"{name}_FILE", "")
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise DestinationError(f"s3parquet: {name}_FILE {path}: {e.strerror or e}") from None


def env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "t", "yes")


def backoff_window(cap: float, attempt: int) -> float:
    """min(cap, base << (attempt-1)): the full-jitter draw is uniform in [0, window]."""
    return min(cap, BACKOFF_BASE * (1 << min(attempt - 1, 30)))


@register("s3parquet")
class S3ParquetDestination(QueuedDestination):
    batch_max_items = 1 << 20

    def __init__(self, address: str, config) -> None:
        where, _, query = address.partition("?")
        opts = parse_options("s3parquet", query, {"endpoint", "region", "compression", "rollRows", "rollBytes",
                                                  "rollSeconds"})
        super().__init__(address, config, opts)
        if config.marshal_to != "protobufList":
            raise DestinationError("s3parquet: needs -marshal protobufList (it decodes Envelopes into columns)")
        self.roll_bytes = num_option("s3parquet", opts, "rollBytes", 0, 1024)          # 0: from the flags
        self.roll_seconds = num_option("s3parquet", opts, "rollSeconds", 0.0, 0.01, float)
        self.batch_max_records = num_option("s3parquet", opts, "rollRows", 1 << 62, 1)
        self.compression = opts.get("compression", "zstd")
        if self.compression not in COMPRESSIONS:
            raise DestinationError(f"s3parquet: compression {self.compression!r} unknown; "
                                   f"valid: {', '.join(COMPRESSIONS)}")
        self.endpoint = opts.get("endpoint") or config.s3_endpoint or os.environ.get("S3_ENDPOINT", "")
        self.region = opts.get("region") or config.s3_region or os.environ.get("S3_REGION", "") or "us-east-1"
        self.bucket = config.s3_bucket or os.environ.get("S3_BUCKET", "")
        self.prefix = (config.s3_prefix or os.environ.get("S3_PREFIX", "")).strip("/")
        self.local = None
        if where.startswith("s3://"):
            self.bucket, _, prefix = where[5:].partition("/")
            self.prefix = prefix.strip("/") or self.prefix
        elif where.startswith(("http://", "https://")):
            self.endpoint = where
        elif where.startswith("/"):
            if not os.path.isdir(where) or not os.access(where, os.W_OK):
                raise DestinationError(f"s3parquet: {where} is not a writable directory")
            self.local = where
        elif where:
            raise DestinationError("s3parquet: address must be empty (use -s3Endpoint), http(s)://endpoint, "
                                   "s3://bucket/prefix or an absolute directory")
        if not self.local:
            if not self.bucket:
                raise DestinationError("s3parquet: no bucket: set -s3Bucket or S3_BUCKET (or s3://BUCKET/...)")
            if not BUCKET_RE.match(self.bucket):
                raise DestinationError(f"s3parquet: bucket name {self.bucket!r} is not valid")
            if self.endpoint and not ENDPOINT_RE.match(self.endpoint):
                raise DestinationError(f"s3parquet: endpoint {self.endpoint!r} must look like http(s)://host:port")
            if not self.endpoint and not where.startswith("s3://"):
                raise DestinationError("s3parquet: no endpoint: give s3parquet:http(s)://host:port, -s3Endpoint "
                                       "or S3_ENDPOINT")
        self.access_key = env_or_file("S3_ACCESS_KEY")
        self.secret_key = env_or_file("S3_SECRET_KEY")
        self.skip_probe = config.s3_skip_bucket_probe or env_bool("S3_SKIP_BUCKET_PROBE")
        self._s3 = None
        self._probed = False
        self._lock = threading.Lock()
        self.files = 0
        self._apply(config)
        self.start()

    # ---- upstream's knobs, re-read when the config changes (SetS3Upload) -------------
    def _apply(self, config) -> None:
        with self._lock:
            self.config = config
            env_bytes = os.environ.get("S3_PARQUET_FLUSH_BYTES", "")
            self.flush_bytes = (self.roll_bytes or config.s3_parquet_flush_threshold_bytes
                                or (int(env_bytes) if env_bytes.isdigit() and int(env_bytes) > 0 else 0)
                                or DEFAULT_FLUSH_BYTES)
            self.flush_interval = (self.roll_seconds or config.s3_flush_interval
                                   or max(config.poll_frequency, FLUSH_INTERVAL_FLOOR))
            self.max_attempts = config.s3_upload_max_attempts or DEFAULT_MAX_ATTEMPTS
            self.backoff_cap = config.s3_upload_backoff_cap or min(max(config.poll_frequency / 10, BACKOFF_CAP_MIN),
                                                                   BACKOFF_CAP_MAX)
            self._next_object()
        with self._cv:
            self._cv.notify_all()  # a batch being gathered sees the new limits now

    def reconfigure(self, config) -> None:
        """The running destination takes new s3 timing/size knobs (the address is unchanged)."""
        self._apply(config)
        self.log_limits("updated")

    def log_limits(self, what: str) -> None:
        import logging
        logging.getLogger(__name__).info(
            "s3parquet %s: objects at %d bytes (jitter %d%%) or %.6g s (jitter %d%%), %d upload attempts, "
            "back-off cap %.6g s", what, self.flush_bytes, self.config.s3_flush_threshold_jitter_pct,
            self.flush_interval, self.config.s3_flush_jitter_pct, self.max_attempts, self.backoff_cap)

    def _next_object(self) -> None:
        """Draw the next object's limits: threshold jittered down, interval +-pct/2."""
        pct_b = self.config.s3_flush_threshold_jitter_pct
        self.batch_max_bytes = max(1024, int(self.flush_bytes - random.uniform(0, self.flush_bytes * pct_b / 100)))
        limit = self.flush_interval * self.config.s3_flush_jitter_pct / 100
        self.batch_max_seconds = max(0.01, self.flush_interval - limit / 2 + random.uniform(0, limit))

    # ---- transport --------------------------------------------------------------------
    def _connect(self) -> None:
        if self.local or self._s3 is not None:
            return
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise PermanentError("s3parquet: needs boto3 for S3 (pip install 'xtcp2[s3]')") from None
        creds = {}
        if self.access_key or self.secret_key:
            creds = {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key}
        s3 = boto3.client("s3", endpoint_url=self.endpoint or None, region_name=self.region,
                          config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=30),
                          **creds)
        if not self.skip_probe and not self._probed:
            from botocore.exceptions import BotoCoreError, ClientError
            try:
                s3.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                what = "does not exist" if code in ("404", "NoSuchBucket") else f"cannot be probed ({code})"
                raise DestinationError(f"s3parquet: bucket {self.bucket!r} {what} on {self.endpoint or 'S3'}"
                                       " (the daemon does not create buckets; -s3SkipBucketProbe for "
                                       "write-only credentials)") from None
            except BotoCoreError as e:
                raise DestinationError(f"s3parquet: {self.endpoint or 'S3'} unreachable: {e}") from None
            self._probed = True
        self._s3 = s3

    def _key(self, batch: list[Item]) -> str:
        first = batch[0]
        key = getattr(first, "parquet_key", None)
        if key is None:  # fixed on the first attempt: a retry overwrites, never duplicates
            key = first.parquet_key = object_key("" if self.local else self.prefix, self.config.hostname)
        return key

    def _deliver(self, batch: list[Item]) -> None:
        try:
            table = envelopes_to_table([i.payload for i in batch])
        except Exception as e:  # noqa: BLE001 - protobuf DecodeError, ValueError, ArrowInvalid
            raise PermanentError(f"s3parquet: cannot decode payloads: {e}") from None
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=None if self.compression == "none" else self.compression)
        data = buf.getvalue()
        key = self._key(batch)
        if self.local:
            self._write_local(key, data)
        else:
            self._upload_with_retry(key, data, table.num_rows)
        self.files += 1
        with self._lock:
            self._next_object()

    def _write_local(self, key: str, data: bytes) -> None:
        path = os.path.join(self.local, key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "wb") as fh:
                fh.write(data)
            os.replace(path + ".tmp", path)
        except OSError as e:
            raise DestinationError(f"s3parquet: write {path} failed: {e.strerror}") from None

    def _upload_with_retry(self, key: str, data: bytes, rows: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
                return
            except ClientError as e:
                err = e.response.get("Error", {})
                why = f"s3parquet: PUT s3://{self.bucket}/{key}: {err.get('Code', '')} {err.get('Message', '')}"
            except BotoCoreError as e:
                why = f"s3parquet: {self.endpoint or 'S3'} unreachable: {e}"
            if attempt == self.max_attempts:
                raise PermanentError(f"{why} (gave up after {attempt} attempts, {rows} rows dropped)")
            self._error(DestinationError(f"{why} (attempt {attempt}/{self.max_attempts})"))
            with self._cv:  # full jitter; close() interrupts the wait
                if not self._stop:
                    self._cv.wait(random.uniform(0, backoff_window(self.backoff_cap, attempt)))
                if self._stop:
                    raise DestinationError(f"{why} (shutting down)")

    def _disconnect(self) -> None:
        self._s3 = None
