"""s3parquet: Parquet files uploaded to a real S3 server (SeaweedFS `weed mini`),
read back with pyarrow and compared row by row; local-directory mode read by chdb."""
from __future__ import annotations

import io

import pytest

from .. import need

pa = need.module("pyarrow")
pq = need.module("pyarrow.parquet")
boto3 = need.module("boto3")

from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.errors import DestinationError  # noqa: E402
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb  # noqa: E402

from .helpers import check_delivered, config, make_payloads, make_record, outage_run  # noqa: E402


@pytest.fixture
def s3env(seaweed_s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed_s3.secret_key)
    return seaweed_s3


def s3_rows(srv, prefix="xtcp2/"):
    s3 = boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1",
                      aws_access_key_id=srv.access_key, aws_secret_access_key=srv.secret_key)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=srv.bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    rows = []
    for k in sorted(keys):
        t = pq.read_table(io.BytesIO(s3.get_object(Bucket=srv.bucket, Key=k)["Body"].read()))
        rows.extend(pb.XtcpFlatRecord(**r) for r in t.to_pylist())
    return keys, rows


def addr(srv, extra=""):
    return f"s3parquet:s3://{srv.bucket}/xtcp2?endpoint={srv.endpoint}{extra}"


@pytest.mark.servers
@pytest.mark.slow
def test_roundtrip_rolls_files_by_rows(s3env):
    d = open_destination(addr(s3env, "&rollRows=2000&rollSeconds=30"), config())
    for p, n in make_payloads(5000, 100):
        d.send(p, n)
    d.close()
    assert d.sent_records == 5000 and d.dropped_records == 0
    keys, rows = s3_rows(s3env)
    assert len(keys) == 3 and all("/dt=" in k and k.endswith(".parquet") for k in keys)
    rows.sort(key=lambda r: r.record_counter)
    assert [r.record_counter for r in rows] == list(range(5000))
    assert all(r == make_record(r.record_counter) for r in rows)
    t = pq.read_table(io.BytesIO(boto3.client(
        "s3", endpoint_url=s3env.endpoint, region_name="us-east-1", aws_access_key_id=s3env.access_key,
        aws_secret_access_key=s3env.secret_key).get_object(Bucket=s3env.bucket, Key=keys[0])["Body"].read()))
    assert t.schema.field("tcp_info_rtt").type == pa.uint32()
    assert t.schema.field("inet_diag_msg_socket_source").type == pa.binary()
    assert t.schema.field("timestamp_ns").type == pa.int64()


@pytest.mark.servers
@pytest.mark.slow
def test_server_killed_mid_stream(s3env):
    d = open_destination(addr(s3env, "&rollRows=1000&rollSeconds=0.2&queue=100&backoffMax=0.3"), config())
    counts = outage_run(d, s3env, pause=0.3)
    assert counts["dropped"] > 0
    _, rows = s3_rows(s3env)
    check_delivered(rows, counts, after_from=5000)


def test_local_directory_mode_read_by_chdb(tmp_path):
    d = open_destination(f"s3parquet:{tmp_path}?rollRows=1500&rollSeconds=30", config())
    for p, n in make_payloads(3000, 100):
        d.send(p, n)
    d.close()
    files = sorted(tmp_path.rglob("*.parquet"))
    assert len(files) == 2 and d.files == 2
    rows = [pb.XtcpFlatRecord(**r) for f in files for r in pq.read_table(f).to_pylist()]
    assert sorted(r.record_counter for r in rows) == list(range(3000))
    chdb = need.module("chdb")
    out = chdb.query(f"SELECT count(), sum(tcp_info_rtt), max(record_counter) FROM file('{tmp_path}/*/*.parquet', "
                     "Parquet)", "CSV").bytes().decode().strip()
    assert out == f"3000,{sum(1000 + i for i in range(3000))},2999"


@pytest.mark.parametrize("spec, msg", [
    ("s3parquet:bucket/x", "must be s3://bucket/prefix or an absolute directory"),
    ("s3parquet:s3://Bad_Bucket/x", "bucket name 'Bad_Bucket' is not valid"),
    ("s3parquet:s3://xtcp/x?endpoint=ftp://h", "must look like http"),
    ("s3parquet:/nonexistent/dir", "is not a writable directory"),
    ("s3parquet:s3://xtcp/x?compression=lzma", "compression 'lzma' unknown"),
])
def test_bad_address(spec, msg):
    with pytest.raises(DestinationError, match=msg):
        open_destination(spec, config())


def test_needs_protobuflist():
    with pytest.raises(DestinationError, match="needs -marshal protobufList"):
        open_destination("s3parquet:/tmp", config(marshal_to="protoJson"))
