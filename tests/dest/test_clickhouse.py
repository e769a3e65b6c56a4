"""ClickHouse: our ProtobufList output read by a real ClickHouse engine (chdb, in-process),
the deploy/ DDL run on it, and the Kafka -> ClickHouse tool end to end with Tansu."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .. import need

chdb = need.module("chdb")
from chdb import session as chs  # noqa: E402
from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: E402

from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb  # noqa: E402
from xtcp2.tools import kafka_to_clickhouse as k2ch  # noqa: E402

from .helpers import config, make_payloads, make_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SQL = ROOT / "deploy" / "clickhouse" / "sql"
FIELDS = list(pb.XtcpFlatRecord.DESCRIPTOR.fields)


def select_list(ts_from_datetime: bool = False) -> str:
    out = []
    for f in FIELDS:
        if f.type == FD.TYPE_BYTES:
            out.append(f"hex({f.name})")
        elif f.name == "timestamp_ns" and ts_from_datetime:
            out.append("toUnixTimestamp64Nano(timestamp_ns)")
        else:
            out.append(f.name)
    return ", ".join(out)


def expected(r: pb.XtcpFlatRecord) -> list:
    out = []
    for f in FIELDS:
        v = getattr(r, f.name)
        if f.type == FD.TYPE_BYTES:
            v = v.hex().upper()
        elif f.type == FD.TYPE_ENUM:
            v = f.enum_type.values_by_number[v].name
        out.append(v)
    return out


def rows_of(result) -> list[list]:
    return [json.loads(line) for line in result.bytes().decode().splitlines() if line]


def assert_rows_match(rows: list[list], n: int) -> None:
    assert len(rows) == n
    counter = [f.name for f in FIELDS].index("record_counter")
    rows.sort(key=lambda r: r[counter])
    for i, row in enumerate(rows):
        assert row == expected(make_record(i)), f"row {i} differs"


JSON_SETTINGS = "output_format_json_quote_64bit_integers = 0"


def write_envelope_files(directory: Path, n: int, per: int) -> None:
    d = open_destination(f"file:{directory}?perEnvelope=1", config())
    for p, rows in make_payloads(n, per):
        d.send(p, rows)
    d.close()


def test_generated_ddl_matches_schema():
    r = subprocess.run([sys.executable, str(ROOT / "deploy/clickhouse/gen_ddl.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kafka = (SQL / "03_xtcp_flat_records_kafka.sql").read_text()
    for setting in ("kafka_format = 'ProtobufList'", "kafka_max_block_size = 1024", "kafka_flush_interval_ms = 2000",
                    "kafka_schema = 'xtcp_flat_record.proto:XtcpFlatRecord'"):
        assert setting in kafka


def test_chdb_reads_our_protobuflist_row_by_row(tmp_path):
    """file: perEnvelope=1 output (one Envelope per file) read by ClickHouse with our .proto."""
    write_envelope_files(tmp_path, 3000, 250)
    assert len(list(tmp_path.glob("*.bin"))) == 12
    q = (f"SELECT {select_list()} FROM file('{tmp_path}/*.bin', 'ProtobufList') "
         f"SETTINGS format_schema = '{k2ch.proto_path()}:XtcpFlatRecord', {JSON_SETTINGS}")
    assert_rows_match(rows_of(chdb.query(q, "JSONCompactEachRow")), 3000)


def pipeline_statements(kafka_engine_substitute: bool = True) -> list[str]:
    """deploy/clickhouse/sql in order. chdb's Kafka engine cannot run (it fails at CREATE
    with LOGICAL_ERROR), so the Kafka table becomes a Null table with the same columns and
    the engine's virtual columns as aliases: inserting into it fires the real MV SQL."""
    out = []
    for f in sorted(SQL.glob("*.sql")):
        sql = f.read_text()
        if kafka_engine_substitute and "ENGINE = Kafka" in sql:
            sql = re.sub(r"\)\nENGINE = Kafka\nSETTINGS[^;]*;",
                         ",\n    _error String ALIAS '', _raw_message String ALIAS '', _topic String ALIAS 'xtcp',\n"
                         "    _partition UInt64 ALIAS 0, _offset UInt64 ALIAS 0\n)\nENGINE = Null;", sql)
            assert "ENGINE = Null" in sql
        out.extend(k2ch._statements(sql))
    return out


def test_pipeline_ddl_and_mv_on_chdb(tmp_path):
    files = tmp_path / "env"
    files.mkdir()
    write_envelope_files(files, 2000, 100)
    s = chs.Session(str(tmp_path / "db"))
    try:
        for stmt in pipeline_statements():
            s.query(stmt)
        s.query(f"INSERT INTO xtcp.xtcp_flat_records_kafka SELECT * FROM file('{files}/*.bin', 'ProtobufList', "
                f"{k2ch.sql_string(k2ch.input_structure())}) SETTINGS format_schema = '{k2ch.proto_path()}:XtcpFlatRecord'")
        assert s.query("SELECT count() FROM xtcp.xtcp_flat_records", "CSV").bytes().strip() == b"2000"
        rows = rows_of(s.query(f"SELECT {select_list(True)} FROM xtcp.xtcp_flat_records SETTINGS {JSON_SETTINGS}",
                               "JSONCompactEachRow"))
        assert_rows_match(rows, 2000)
        assert s.query("SELECT count() FROM xtcp.xtcp_flat_records_errors", "CSV").bytes().strip() == b"0"
    finally:
        s.close()


@pytest.mark.servers
@pytest.mark.slow
def test_kafka_destination_to_chdb_with_the_tool(tansu, tmp_path, capsys):
    tansu.create_topic("xtcp")
    d = open_destination(f"kafka:{tansu.bootstrap}", config())
    for p, n in make_payloads(4000, 200):
        d.send(p, n)
    d.close()
    assert d.sent_records == 4000
    from xtcp2.tools import kafka_client
    assert kafka_client.main(["--brokers", tansu.bootstrap, "--format", "count", "--max-messages", "20",
                              "--timeout", "10"]) == 0
    assert capsys.readouterr().out.strip() == "20 messages, 4000 records, 0 undecodable"

    db = tmp_path / "chdb"
    assert k2ch.main(["--brokers", tansu.bootstrap, "--chdb", str(db), "--max-messages", "20",
                      "--idle-exit", "15", "--batch", "7", "--session-timeout", "6"]) == 0
    s = chs.Session(str(db))
    try:
        rows = rows_of(s.query(f"SELECT {select_list(True)} FROM xtcp.xtcp_flat_records SETTINGS {JSON_SETTINGS}",
                               "JSONCompactEachRow"))
    finally:
        s.close()
    assert_rows_match(rows, 4000)


MONITOR_LINE = re.compile(r"^XTCP2_CLICKPIPE_ROWS \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ rows=(\d+) netns=(\d+) "
                          r"container_id=(\d+) kafka_exc=(\d+) reb=(\d+) msgs=(\d+) disk=(\d+)$")


@pytest.mark.servers
@pytest.mark.slow
def test_bridge_monitor_prints_growing_rows(tansu, tmp_path):
    """--monitor-interval prints upstream's XTCP2_CLICKPIPE_ROWS heartbeat from the database
    the bridge fills: rows follow what is produced while the bridge runs."""
    import select
    import time
    tansu.create_topic("xtcp")
    bridge = subprocess.Popen([sys.executable, "-m", "xtcp2.tools.kafka_to_clickhouse", "--brokers", tansu.bootstrap,
                               "--chdb", str(tmp_path / "chdb"), "--monitor-interval", "0.5",
                               "--session-timeout", "6"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    readings: list[tuple[int, ...]] = []

    def read_until(rows: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if select.select([bridge.stdout], [], [], 1)[0]:
                m = MONITOR_LINE.match(bridge.stdout.readline().strip())
                if m:
                    readings.append(tuple(map(int, m.groups())))
                    if readings[-1][0] >= rows:
                        return
        raise AssertionError(f"rows never reached {rows}: {readings[-3:]}")

    try:
        payloads = make_payloads(3000, 100)
        for batch, upto in ((payloads[:10], 1000), (payloads[10:], 3000)):
            d = open_destination(f"kafka:{tansu.bootstrap}", config())
            for p, n in batch:
                d.send(p, n)
            d.close()
            read_until(upto, 90)
    finally:
        bridge.send_signal(2)  # SIGINT: a clean stop prints the last heartbeat
        out, err = bridge.communicate(timeout=60)
    last = MONITOR_LINE.match(out.strip().splitlines()[-1])
    assert bridge.returncode == 0, err
    assert last and int(last.group(1)) == 3000, out[-500:]
    rows = [r[0] for r in readings]
    assert rows == sorted(rows) and rows[0] < 3000 and 1000 in rows, rows
    rows_, netns, cids, exc, _reb, msgs, disk = readings[-1]
    assert (netns, cids, exc, msgs) == (7, 0, 0, 30)  # make_record: 7 namespaces, no container ids
    assert 0 < disk <= 100


def test_kafka_client_table_and_json_format():
    from xtcp2.tools.kafka_client import decode_message, format_row
    (payload, _), = make_payloads(3, 3)
    rows = decode_message(payload)
    assert [r.record_counter for r in rows] == [0, 1, 2]
    line = format_row(rows[1], "table").split("\t")
    assert line[3] == "127.0.0.1:40001" and line[4] == "10.1.0.1:443"
    assert json.loads(format_row(rows[0], "protoJson"))["inet_diag_msg_socket_source_port"] == 40000
    with pytest.raises(ValueError):
        decode_message(b"\x05abc")


def test_tools_fail_with_one_line_when_broker_is_down(tmp_path):
    from tests.servers import free_port
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.kafka_client", "--brokers", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("xtcp2_kafka_client: broker 127.0.0.1")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args, msg", [
    ([], "one of --chdb PATH or --http URL is required"),
    (["--chdb", "/tmp/x", "--topic", "x'y"], "is not a valid topic name"),
    (["--chdb", "/tmp/x", "--database", "x;drop"], "is not a plain identifier"),
    (["--http", "ftp://h"], "must look like http://host:8123"),
    (["--chdb", "/tmp/x", "--session-timeout", "0"], "--session-timeout must be"),
    (["--chdb", "/tmp/x", "--monitor-interval", "-1"], "--monitor-interval must be"),
])
def test_kafka_to_clickhouse_rejects_bad_arguments(args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        k2ch.main(args)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_print_ddl_uses_given_broker(capsys):
    assert k2ch.main(["--print-ddl", "--brokers", "redpanda-0:9092"]) == 0
    assert "kafka_broker_list = 'redpanda-0:9092'" in capsys.readouterr().out


def _write_version0(directory: Path, n: int, start: int) -> None:
    """Envelopes of legacy rows (schema_version 0, as upstream's pre-versioning daemon)."""
    from xtcp2.marshal import get_marshaller
    from xtcp2.records.envelope import EncodedEnvelope
    recs = [make_record(i) for i in range(start, start + n)]
    for r in recs:
        r.schema_version = 0
    (directory / "v0.bin").write_bytes(get_marshaller("protobufList")(EncodedEnvelope.from_records(recs)))


def test_versioned_tables_merge_facade_and_typed_columns(tmp_path):
    """Upstream's layout on the real engine: rows routed to _v0/_v1 by schema_version
    through the per-version MVs (from the Kafka table and from the ingest table), read
    back through the Merge table; IPv6 and Enum columns filled; ORDER BY / TTL as upstream."""
    files = tmp_path / "env"
    files.mkdir()
    write_envelope_files(files, 1000, 100)       # schema_version 1
    _write_version0(files, 300, 1000)             # schema_version 0
    s = chs.Session(str(tmp_path / "db"))
    try:
        for stmt in pipeline_statements():
            s.query(stmt)
        src = (f"file('{files}/*.bin', 'ProtobufList', {k2ch.sql_string(k2ch.input_structure())}) "
               f"SETTINGS format_schema = '{k2ch.proto_path()}:XtcpFlatRecord'")
        s.query(f"INSERT INTO xtcp.xtcp_flat_records_kafka SELECT * FROM {src}")
        count = lambda t: int(s.query(f"SELECT count() FROM xtcp.{t}", "CSV").bytes())  # noqa: E731
        assert (count("xtcp_flat_records_v0"), count("xtcp_flat_records_v1"), count("xtcp_flat_records")) == \
            (300, 1000, 1300)
        assert s.query("SELECT DISTINCT schema_version FROM xtcp.xtcp_flat_records_v0", "CSV").bytes().strip() == b"0"
        s.query(k2ch.ingest_insert("xtcp", src))                  # the HTTP / tool path: same routing
        assert (count("xtcp_flat_records_v0"), count("xtcp_flat_records_v1")) == (600, 2000)
        typed = rows_of(s.query(
            "SELECT record_counter, toString(inet_diag_msg_socket_source_ip), "
            "toString(inet_diag_msg_socket_destination_ip), toString(inet_diag_msg_state_name) "
            "FROM xtcp.xtcp_flat_records WHERE record_counter IN (1, 2) ORDER BY record_counter LIMIT 2 BY record_counter",
            "JSONCompactEachRow"))
        assert typed[0][1:] == ["::ffff:127.0.0.1", "::ffff:10.1.0.1", "ESTABLISHED"]   # AF_INET row
        assert typed[2][1:3] == ["::1", "::ffff:10.2.0.1"]                            # AF_INET6 source
        meta = rows_of(s.query("SELECT name, engine, sorting_key, engine_full FROM system.tables "
                               "WHERE database = 'xtcp' ORDER BY name", "JSONCompactEachRow"))
        by = {m[0]: m for m in meta}
        assert by["xtcp_flat_records"][1] == "Merge"
        for v in k2ch.SCHEMA_VERSIONS:
            t = by[f"xtcp_flat_records_v{v}"]
            assert t[2] == "timestamp_ns, hostname, record_counter, netlinker_id, socket_fd"
            assert "TTL toDateTime(timestamp_ns) + toIntervalMonth(1)" in t[3]
            assert f"xtcp_flat_records_v{v}_mv" in by and f"xtcp_flat_records_ingest_v{v}_mv" in by
        assert "TTL observed_at + toIntervalDay(1)" in by["xtcp_flat_records_errors"][3]
    finally:
        s.close()
