"""deploy/: the Grafana dashboard's ClickHouse queries run on a real ClickHouse engine
(chdb) over rows our pipeline produced; its PromQL and the Prometheus scrape config
and rules run on a real Prometheus scraping this process's xtcp2 metrics."""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port, wait_port
from xtcp2.dest import open_destination

from .. import need
from .helpers import T0, config, make_payloads

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "deploy" / "grafana" / "xtcp2.json"
PROM = ROOT / "deploy" / "prometheus"


def dashboard() -> dict:
    return json.loads(DASH.read_text())


def test_dashboard_json_is_well_formed():
    d = dashboard()
    assert d["uid"] and d["title"] and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0
        assert p["datasource"]["uid"] in ("${DS_CLICKHOUSE}", "${DS_PROMETHEUS}")
        for t in p["targets"]:
            assert t.get("rawSql") or t.get("expr"), p["title"]
    inputs = {i["name"] for i in d["__inputs"]}
    assert inputs == {"DS_CLICKHOUSE", "DS_PROMETHEUS"}


def expand_grafana_sql(sql: str, t_from: int, t_to: int, hosts: list[str]) -> str:
    """The ClickHouse data source plugin's macros, expanded the way it does."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({t_from}) AND \1 <= toDateTime({t_to})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
    sql = sql.replace("${hostname:singlequote}", ",".join(f"'{h}'" for h in hosts))
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


def test_dashboard_clickhouse_queries_on_chdb(tmp_path):
    need.module("chdb")
    from chdb import session as chs

    from xtcp2.tools import kafka_to_clickhouse as k2ch
    files = tmp_path / "env"
    files.mkdir()
    d = open_destination(f"file:{files}?perEnvelope=1", config())
    for p, n in make_payloads(2000, 100):
        d.send(p, n)
    d.close()
    s = chs.Session(str(tmp_path / "db"))
    try:
        for name in ("01_database.sql", "02_xtcp_flat_records.sql"):
            for stmt in k2ch._statements((ROOT / "deploy/clickhouse/sql" / name).read_text()):
                s.query(stmt)
        src = (f"file('{files}/*.bin', 'ProtobufList', {k2ch.sql_string(k2ch.input_structure())}) "
               f"SETTINGS format_schema = '{k2ch.proto_path()}:XtcpFlatRecord'")
        s.query(k2ch.insert_select("xtcp", src))   # into _v1; the dashboards read the Merge table
        dash = dashboard()
        var = next(v for v in dash["templating"]["list"] if v["name"] == "hostname")
        hosts = s.query(var["query"], "CSV").bytes().decode().split()
        assert hosts == ['"host0"', '"host1"', '"host2"']
        hosts = [h.strip('"') for h in hosts]
        t_from, t_to = T0 // 10**9 - 60, T0 // 10**9 + 3600
        ran = 0
        for p in dash["panels"]:
            for t in p["targets"]:
                if "rawSql" not in t:
                    continue
                out = s.query(expand_grafana_sql(t["rawSql"], t_from, t_to, hosts), "JSONCompact").bytes()
                res = json.loads(out)
                assert res["rows"] > 0, f"panel {p['title']!r} returned nothing"
                ran += 1
                if p["title"].startswith("Records per interval"):
                    assert sum(int(r[2]) for r in res["data"]) == 2000
                if p["title"].startswith("Congestion control"):
                    assert {r[0]: int(r[1]) for r in res["data"]} == {"cubic": 1000, "bbr": 1000}
        assert ran == 8
    finally:
        s.close()


def test_prometheus_config_and_rules_are_valid():
    need.binary("promtool", "Debian prometheus, scripts/apt-test.txt")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "xtcp2_rules.yml"]):
        r = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr


def prom_query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.slow
@pytest.mark.servers
def test_real_prometheus_scrapes_and_runs_dashboard_promql(tmp_path):
    need.binary("prometheus", "Debian prometheus, scripts/apt-test.txt")
    from prometheus_client import start_http_server
    d = open_destination(f"unixgram:{tmp_path}/none.sock?flushTimeout=0", config())
    for p, n in make_payloads(10, 10):
        d.send(p, n)
    d.close()  # nobody listens: 10 records dropped, counted
    mport, pport = free_port(), free_port()
    server, thread = start_http_server(mport, addr="127.0.0.1")
    cfg = (PROM / "prometheus.yml").read_text()
    cfg = cfg.replace("127.0.0.1:9088", f"127.0.0.1:{mport}").replace("127.0.0.1:9090", f"127.0.0.1:{pport}")
    cfg = cfg.replace("scrape_interval: 15s", "scrape_interval: 1s").replace(
        "xtcp2_rules.yml", str(PROM / "xtcp2_rules.yml"))
    (tmp_path / "prometheus.yml").write_text(cfg)
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(pport, 30, proc)
        deadline = time.monotonic() + 30
        while True:
            try:  # 503 until the TSDB is ready
                res = prom_query(pport, 'xtcp2_dest_dropped_records_total{dest="unixgram"}')
                if res["data"]["result"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "xtcp2 metrics never scraped"
            time.sleep(0.5)
        assert float(res["data"]["result"][0]["value"][1]) >= 10
        for p in dashboard()["panels"]:
            for t in p["targets"]:
                if "expr" in t:
                    expr = t["expr"].replace("$instance", ".*").replace("$__rate_interval", "1m")
                    assert prom_query(pport, expr)["status"] == "success", t["expr"]
        with urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v1/rules", timeout=5) as r:
            rules = json.loads(r.read())["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} >= {"Xtcp2DestinationDropping", "Xtcp2Down"}
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
        server.server_close()
