"""s3parquet: Parquet files uploaded to a real S3 server (SeaweedFS `weed mini`),
read back with pyarrow and compared row by row; local-directory mode read by chdb."""
from __future__ import annotations

import io
import re
import time

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
        rows.extend(pb.XtcpFlatRecord(**{k: v for k, v in r.items() if k != "event_date"}) for r in t.to_pylist())
    return keys, rows


KEY_RE = re.compile(r"^xtcp2/host=testhost/date=\d{4}-\d\d-\d\d/hour=\d\d/\d{10}_[0-9a-f]{8}\.parquet$")


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
    assert len(keys) == 3 and all(KEY_RE.match(k) for k in keys), keys
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
    d = open_destination(addr(s3env, "&rollRows=1000&rollSeconds=0.2&queue=100&backoffMax=0.3"),
                         config(s3_upload_max_attempts=1000, s3_upload_backoff_cap=0.2))
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
    assert all(re.search(r"/host=testhost/date=[-0-9]{10}/hour=\d\d/\d+_[0-9a-f]{8}\.parquet$", str(f)) for f in files)
    rows = [pb.XtcpFlatRecord(**{k: v for k, v in r.items() if k != "event_date"})
            for f in files for r in pq.read_table(f).to_pylist()]
    assert sorted(r.record_counter for r in rows) == list(range(3000))
    chdb = need.module("chdb")
    out = chdb.query(f"SELECT count(), sum(tcp_info_rtt), max(record_counter) FROM file('{tmp_path}/**/*.parquet', "
                     "Parquet)", "CSV").bytes().decode().strip()
    assert out == f"3000,{sum(1000 + i for i in range(3000))},2999"


@pytest.mark.parametrize("spec, msg", [
    ("s3parquet:bucket/x", "must be empty (use -s3Endpoint), http(s)://endpoint, s3://bucket/prefix or an absolute"),
    ("s3parquet:http://127.0.0.1:1", "no bucket: set -s3Bucket or S3_BUCKET"),
    ("s3parquet:", "no bucket"),
    ("s3parquet:s3://Bad_Bucket/x", "bucket name 'Bad_Bucket' is not valid"),
    ("s3parquet:s3://xtcp/x?endpoint=ftp://h", "must look like http"),
    ("s3parquet:/nonexistent/dir", "is not a writable directory"),
    ("s3parquet:s3://xtcp/x?compression=lzma", "compression 'lzma' unknown"),
])
def test_bad_address(spec, msg):
    with pytest.raises(DestinationError, match=re.escape(msg)):
        open_destination(spec, config())


def test_needs_protobuflist():
    with pytest.raises(DestinationError, match="needs -marshal protobufList"):
        open_destination("s3parquet:/tmp", config(marshal_to="protoJson"))


def _s3(srv):
    return boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1",
                        aws_access_key_id=srv.access_key, aws_secret_access_key=srv.secret_key)


@pytest.mark.servers
def test_upstream_form_flags_and_key_files(seaweed_s3, tmp_path, monkeypatch):
    """-dest s3parquet:ENDPOINT with -s3Bucket/-s3Prefix, keys from S3_*_FILE (no AWS_* set):
    upstream's host=/date=/hour= layout and event_date, read back by pyarrow and by chdb's s3()."""
    for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        monkeypatch.delenv(v, raising=False)
    (tmp_path / "ak").write_text(seaweed_s3.access_key + "\n")
    (tmp_path / "sk").write_text(seaweed_s3.secret_key + "\n")
    monkeypatch.setenv("S3_ACCESS_KEY_FILE", str(tmp_path / "ak"))
    monkeypatch.setenv("S3_SECRET_KEY_FILE", str(tmp_path / "sk"))
    cfg = config(s3_bucket=seaweed_s3.bucket, s3_prefix="/up/stream/", s3_parquet_flush_threshold_bytes=200_000)
    d = open_destination(f"s3parquet:{seaweed_s3.endpoint}", cfg)
    assert d.batch_max_seconds == 30 * 60  # upstream's derived interval: max(-frequency, 30m)
    for p, n in make_payloads(3000, 100):
        d.send(p, n)
    d.close()
    assert d.sent_records == 3000 and d.dropped_records == 0
    s3 = _s3(seaweed_s3)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=seaweed_s3.bucket, Prefix="up/")["Contents"])
    assert len(keys) >= 2, "a 200 kB threshold cuts 3000 rows into several objects"
    now = time.gmtime()
    for k in keys:
        assert re.match(r"^up/stream/host=testhost/date=\d{4}-\d\d-\d\d/hour=\d\d/\d{10}_[0-9a-f]{8}\.parquet$", k), k
    t = pq.read_table(io.BytesIO(s3.get_object(Bucket=seaweed_s3.bucket, Key=keys[0])["Body"].read()))
    names = t.schema.names
    assert names[names.index("location") + 1] == "event_date"
    ts = t.column("timestamp_ns").to_pylist()
    assert t.column("event_date").to_pylist() == [time.strftime("%Y-%m-%d", time.gmtime(x / 1e9)) for x in ts]
    assert time.strftime("date=%Y-%m-%d", now) in keys[0] or time.strftime("date=%Y-%m-%d") in keys[0]
    chdb = need.module("chdb")
    url = f"{seaweed_s3.endpoint}/{seaweed_s3.bucket}/up/stream/**/*.parquet"
    out = chdb.query(f"SELECT count(), uniqExact(record_counter), min(record_counter), max(record_counter), "
                     f"countIf(event_date = toString(toDate(fromUnixTimestamp64Nano(timestamp_ns, 'UTC')))) "
                     f"FROM s3('{url}', '{seaweed_s3.access_key}', '{seaweed_s3.secret_key}', 'Parquet')",
                     "CSV").bytes().decode().strip()
    assert out == "3000,3000,0,2999,3000"


@pytest.mark.servers
def test_missing_bucket_reported_and_retried(s3env, caplog):
    d = open_destination(f"s3parquet:s3://no-such-bucket-xtcp/p?endpoint={s3env.endpoint}&rollSeconds=0.05"
                         "&backoffMax=0.1&flushTimeout=0.5", config())
    d.send(*make_payloads(10, 10)[0])
    from .helpers import wait_for
    assert wait_for(lambda: d.errors > 0, 10)
    d.close()
    assert (d.sent_records, d.dropped_records) == (0, 10)
    assert "bucket 'no-such-bucket-xtcp' does not exist" in caplog.text


@pytest.mark.servers
def test_skip_bucket_probe_and_upload_attempts(seaweed_s3, monkeypatch):
    """With the probe skipped the first PUT is the first request; against an endpoint that
    refuses, each object is tried -s3UploadMaxAttempts times, then dropped and counted."""
    monkeypatch.setenv("S3_ACCESS_KEY", "x")
    monkeypatch.setenv("S3_SECRET_KEY", "y")
    from tests.servers import free_port
    cfg = config(s3_bucket="xtcp", s3_skip_bucket_probe=True, s3_upload_max_attempts=3,
                 s3_upload_backoff_cap=0.05, s3_flush_interval=0.05)
    d = open_destination(f"s3parquet:http://127.0.0.1:{free_port()}", cfg)
    d.send(*make_payloads(200, 200)[0])  # one object
    from .helpers import wait_for
    assert wait_for(lambda: d.dropped_records == 200, 20)
    d.close()
    assert (d.sent_records, d.dropped_records) == (0, 200)
    assert d.errors == 3  # three attempts, each failure counted; no fourth


def test_jitter_bounds_and_runtime_reconfigure(tmp_path):
    cfg = config(s3_parquet_flush_threshold_bytes=1_000_000, s3_flush_threshold_jitter_pct=20,
                 s3_flush_interval=100.0, s3_flush_jitter_pct=10)
    d = open_destination(f"s3parquet:{tmp_path}", cfg)
    try:
        sizes, waits = set(), set()
        for _ in range(200):
            d._next_object()
            sizes.add(d.batch_max_bytes)
            waits.add(d.batch_max_seconds)
        assert 800_000 <= min(sizes) and max(sizes) <= 1_000_000 and len(sizes) > 100
        assert 95.0 <= min(waits) and max(waits) <= 105.0 and len(waits) > 100
        d.reconfigure(cfg.replace(s3_flush_interval=7.0, s3_flush_jitter_pct=0, s3_parquet_flush_threshold_bytes=5000,
                                  s3_flush_threshold_jitter_pct=0))
        assert (d.batch_max_seconds, d.batch_max_bytes) == (7.0, 5000)
    finally:
        d.close()


def test_grpc_path_policy_and_flags():
    """s3parquet:ENDPOINT is a network destination for gRPC's path confinement; a local
    directory still is a path; the S3 keys have no command-line flag."""
    from xtcp2.api.path_policy import dest_local_path
    from xtcp2.cli import build_parser, config_from_args
    assert dest_local_path("s3parquet:http://127.0.0.1:8333") is None
    assert dest_local_path("s3parquet:https://s3.example.com") is None
    assert dest_local_path("s3parquet:s3://b/p?endpoint=http://h:1") is None
    assert dest_local_path("s3parquet:/var/lib/xtcp2/pq") == "/var/lib/xtcp2/pq"
    assert dest_local_path("s3parquet:relative/dir") == "relative/dir"   # confine() refuses it
    args = build_parser().parse_args(["-dest", "s3parquet:http://h:1", "-s3Bucket", "b", "-s3FlushInterval", "90s",
                                      "-s3ParquetFlushBytes", "1000000", "-s3SkipBucketProbe", "true",
                                      "-s3UploadBackoffCap", "2s", "-produceTimeout", "3s"])
    cfg = config_from_args(args)
    assert (cfg.s3_bucket, cfg.s3_flush_interval, cfg.s3_parquet_flush_threshold_bytes, cfg.s3_skip_bucket_probe,
            cfg.s3_upload_backoff_cap, cfg.kafka_produce_timeout) == ("b", 90.0, 1_000_000, True, 2.0, 3.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-s3SecretKey", "x"])
    assert "secret" not in str(cfg.as_dict()).lower()
