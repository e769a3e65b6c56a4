"""s3parquet: rows as Parquet files, uploaded to S3 (or written to a local directory).

    s3parquet:s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:8333&region=us-east-1
    s3parquet:/var/lib/xtcp2/parquet             local-directory mode

Queued Envelopes are collected until rollRows rows (default 100000), rollBytes of
input (default 64 MiB) or rollSeconds since the first one (default 60), then written
as one Parquet file: one column per XtcpFlatRecord field, named like the proto field
(uint32 -> uint32, uint64 -> uint64, int64 -> int64, string -> string, bytes ->
binary, enums -> int32 numbers). Keys/names:
    PREFIX/dt=YYYY-MM-DD/HOSTNAME-<first enqueue ns>-<seq>.parquet
and a retried upload reuses its key, so a retry never leaves two copies.

Options: endpoint (S3-compatible server URL; omit for AWS), region (default
us-east-1), compression zstd|snappy|gzip|none (default zstd), rollRows, rollBytes,
rollSeconds, plus the common queue options. Credentials come from the usual AWS
environment variables / files (boto3), never from the command line. Needs
-marshal protobufList.
"""
from __future__ import annotations

import io
import itertools
import os
import re
import time

from ..errors import DestinationError
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..marshal.protobuf_list import unmarshal
from .base import register
from .queued import Item, PermanentError, QueuedDestination, num_option, parse_options

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.protobuf.descriptor import FieldDescriptor as FD
except ImportError as e:
    raise ImportError("pyarrow (pip install 'xtcp2[s3]')") from e

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
COMPRESSIONS = ("zstd", "snappy", "gzip", "none")
_ARROW = {FD.TYPE_UINT32: pa.uint32(), FD.TYPE_UINT64: pa.uint64(), FD.TYPE_INT64: pa.int64(),
          FD.TYPE_INT32: pa.int32(), FD.TYPE_STRING: pa.string(), FD.TYPE_BYTES: pa.binary(),
          FD.TYPE_ENUM: pa.int32(), FD.TYPE_BOOL: pa.bool_(), FD.TYPE_DOUBLE: pa.float64(),
          FD.TYPE_FLOAT: pa.float32(), FD.TYPE_FIXED64: pa.uint64(), FD.TYPE_FIXED32: pa.uint32()}
FIELDS = [(f.name, _ARROW[f.type]) for f in pb.XtcpFlatRecord.DESCRIPTOR.fields]
SCHEMA = pa.schema(FIELDS)


def envelopes_to_table(payloads: list[bytes]) -> pa.Table:
    """protobufList payloads -> one Arrow table, one column per proto field."""
    rows = []
    for p in payloads:
        for body in unmarshal(p):
            rows.extend(pb.Envelope.FromString(body).row)
    cols = [pa.array([getattr(r, name) for r in rows], type=t) for name, t in FIELDS]
    return pa.Table.from_arrays(cols, schema=SCHEMA)


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
        self.batch_max_records = num_option("s3parquet", opts, "rollRows", 100000, 1)
        self.batch_max_bytes = num_option("s3parquet", opts, "rollBytes", 64 << 20, 1024)
        self.batch_max_seconds = num_option("s3parquet", opts, "rollSeconds", 60.0, 0.01, float)
        self.compression = opts.get("compression", "zstd")
        if self.compression not in COMPRESSIONS:
            raise DestinationError(f"s3parquet: compression {self.compression!r} unknown; "
                                   f"valid: {', '.join(COMPRESSIONS)}")
        self.endpoint = opts.get("endpoint")
        self.region = opts.get("region", "us-east-1")
        if where.startswith("s3://"):
            bucket, _, prefix = where[5:].partition("/")
            if not BUCKET_RE.match(bucket):
                raise DestinationError(f"s3parquet: bucket name {bucket!r} is not valid")
            if self.endpoint and not re.match(r"^https?://[^/\s]+/?$", self.endpoint):
                raise DestinationError(f"s3parquet: endpoint {self.endpoint!r} must look like http(s)://host:port")
            self.bucket, self.prefix, self.local = bucket, prefix.strip("/"), None
        elif where.startswith("/"):
            if not os.path.isdir(where) or not os.access(where, os.W_OK):
                raise DestinationError(f"s3parquet: {where} is not a writable directory")
            self.bucket, self.prefix, self.local = None, "", where
        else:
            raise DestinationError("s3parquet: address must be s3://bucket/prefix or an absolute directory")
        self._s3 = None
        self._seq = itertools.count(1)
        self.files = 0
        self.start()

    def _connect(self) -> None:
        if self.local or self._s3 is not None:
            return
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise PermanentError("s3parquet: needs boto3 for s3:// (pip install 'xtcp2[s3]')") from None
        self._s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                                config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=30))

    def _name(self, batch: list[Item]) -> str:
        first = batch[0]
        name = getattr(first, "parquet_name", None)
        if name is None:  # fixed on the first attempt: a retry overwrites, never duplicates
            ts = time.time_ns()
            day = time.strftime("%Y-%m-%d", time.gmtime(ts / 1e9))
            name = first.parquet_name = f"dt={day}/{self.config.hostname}-{ts}-{next(self._seq):06d}.parquet"
        return name

    def _deliver(self, batch: list[Item]) -> None:
        try:
            table = envelopes_to_table([i.payload for i in batch])
        except Exception as e:  # noqa: BLE001 - protobuf DecodeError, ValueError, ArrowInvalid
            raise PermanentError(f"s3parquet: cannot decode payloads: {e}") from None
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=None if self.compression == "none" else self.compression)
        data = buf.getvalue()
        name = self._name(batch)
        if self.local:
            path = os.path.join(self.local, name)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "wb") as fh:
                    fh.write(data)
                os.replace(path + ".tmp", path)
            except OSError as e:
                raise DestinationError(f"s3parquet: write {path} failed: {e.strerror}") from None
        else:
            from botocore.exceptions import BotoCoreError, ClientError
            key = f"{self.prefix}/{name}" if self.prefix else name
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
            except ClientError as e:
                err = e.response.get("Error", {})
                code = err.get("Code", "")
                if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                    raise DestinationError(f"s3parquet: {code} for s3://{self.bucket}/{key}: "
                                           f"{err.get('Message', '')}") from None
                raise DestinationError(f"s3parquet: upload failed: {code} {err.get('Message', '')}") from None
            except BotoCoreError as e:
                raise DestinationError(f"s3parquet: {self.endpoint or 'S3'} unreachable: {e}") from None
        self.files += 1

    def _disconnect(self) -> None:
        self._s3 = None
