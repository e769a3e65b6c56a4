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
from xtcp2.api.upstream_metrics import register_upstream_metrics
from xtcp2.dest import open_destination

from .. import need
from .helpers import T0, config, make_payloads

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "deploy" / "grafana" / "xtcp2.json"
PROM = ROOT / "deploy" / "prometheus"


def dashboard() -> dict:
    return json.loads(DASH.read_text())


# What the dashboard may use, from Grafana's dashboard model (schemaVersion 39): panel
# types, unit ids of its unit picker, override property ids.
PANEL_TYPES = {"timeseries", "table", "barchart", "piechart", "bargauge", "stat", "gauge", "text", "row"}
UNITS = {"short", "none", "s", "ms", "Bps", "bytes", "cps", "ops", "percentunit", "dateTimeAsIso"}
OVERRIDE_PROPERTIES = {"unit", "displayName", "mappings", "custom.width", "decimals"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__timeFilter", "__timeInterval", "__range"}


def datasource_refs(obj, path="$"):
    """Every {"type", "uid"} datasource reference in the dashboard, with where it is."""
    if isinstance(obj, dict):
        ds = obj.get("datasource")
        if isinstance(ds, dict):
            yield path, ds
        elif ds is not None:
            raise AssertionError(f"{path}: datasource must be an object, got {ds!r}")
        for k, v in obj.items():
            if k != "datasource":
                yield from datasource_refs(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from datasource_refs(v, f"{path}[{i}]")


def test_dashboard_structure():
    """The dashboard model Grafana expects, checked without a Grafana: provisioning-safe
    data source references, variables, layout, units and value mappings."""
    from xtcp2.marshal.human import STATE_NAMES

    d = dashboard()
    assert d["uid"] and d["title"] and d["panels"] and isinstance(d["schemaVersion"], int)
    assert d["schemaVersion"] >= 36 and "__inputs" not in d  # __inputs only work through the import UI
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert len(variables) == len(d["templating"]["list"])
    # data sources: a datasource variable of the matching plugin type, which file
    # provisioning resolves to whichever data source of that type exists
    ds_vars = {f"${{{n}}}": v["query"] for n, v in variables.items() if v["type"] == "datasource"}
    assert set(ds_vars.values()) == {"prometheus", "grafana-clickhouse-datasource"}
    refs = list(datasource_refs(d))
    assert len(refs) > len(d["panels"])
    for where, ref in refs:
        assert set(ref) == {"type", "uid"}, where
        assert ds_vars.get(ref["uid"]) == ref["type"], f"{where}: {ref}"
    # every variable used is defined (or Grafana's own)
    texts = [v.get("definition", "") for v in variables.values()]
    texts += [t.get("expr") or t.get("rawSql") for p in d["panels"] for t in p["targets"]]
    for text in texts:
        for name in re.findall(r"\$\{?(\w+)", text):
            assert name in variables or name in BUILTIN_VARS, f"undefined ${name} in {text}"
    for name in ("netns", "container", "instance", "hostname"):
        assert variables[name]["type"] == "query"
    assert "netns" in variables["container"]["definition"]  # containers of the chosen namespaces
    # layout
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells = set()
    for p in d["panels"]:
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh")
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        refids = [t["refId"] for t in p["targets"]]
        assert refids and len(refids) == len(set(refids))
        for t in p["targets"]:
            assert t.get("rawSql") or t.get("expr"), p["title"]
        fc = p["fieldConfig"]
        assert fc["defaults"].get("unit", "short") in UNITS, p["title"]
        for o in fc.get("overrides", []):
            assert o["matcher"]["id"] in ("byName", "byRegexp")
            for prop in o["properties"]:
                assert prop["id"] in OVERRIDE_PROPERTIES
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS
        for m in fc["defaults"].get("mappings", []):
            assert m["type"] == "value" and all(k.isdigit() and set(v) >= {"text"} for k, v in m["options"].items())
    # TCP states by name, the same names as the human output formats
    states = next(p for p in d["panels"] if p["title"].startswith("Socket states"))
    options = states["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {int(k): v["text"] for k, v in options.items()} == STATE_NAMES
    # panels for the TCP metrics, with units
    exprs = {t["expr"]: p["fieldConfig"]["defaults"].get("unit") for p in d["panels"] for t in p["targets"]
             if "expr" in t}
    for metric, unit in (("xtcp2_tcp_sockets", "short"), ("xtcp2_tcp_rtt_seconds_bucket", "s"),
                         ("xtcp2_tcp_sent_bytes_total", "Bps"), ("xtcp2_tcp_received_bytes_total", "Bps"),
                         ("xtcp2_tcp_retransmits_total", "cps"), ("xtcp2_tcp_opens_total", "cps"),
                         ("xtcp2_tcp_closes_total", "cps")):
        assert unit in {u for e, u in exprs.items() if metric in e}, metric


def expand_grafana_sql(sql: str, t_from: int, t_to: int, hosts: list[str], netns: str = ".*") -> str:
    """The ClickHouse data source plugin's macros, expanded the way it does; netns is
    Grafana's regex format of the Namespace variable (".*" = All)."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({t_from}) AND \1 <= toDateTime({t_to})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
    sql = sql.replace("${hostname:singlequote}", ",".join(f"'{h}'" for h in hosts))
    # Namespace and Container set to All: Grafana's regex format of allValue
    sql = sql.replace("${netns:regex}", netns).replace("${container:regex}", ".*")
    assert not re.search(r"\$[{\w]", sql), f"unexpanded macro in {sql}"
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
        assert ran == 9
        # the Namespace variable narrows the ClickHouse panels too
        records = next(t["rawSql"] for p in dash["panels"] if p["title"].startswith("Records per interval")
                       for t in p["targets"])
        for netns, want in (("ns3", sum(1 for i in range(2000) if i % 7 == 3)), ("(ns1|ns2)", None)):
            res = json.loads(s.query(expand_grafana_sql(records, t_from, t_to, hosts, netns), "JSONCompact").bytes())
            got = sum(int(r[2]) for r in res["data"])
            assert got == (want if want is not None else sum(1 for i in range(2000) if i % 7 in (1, 2)))
    finally:
        s.close()


def test_prometheus_config_and_rules_are_valid():
    need.binary("promtool", "Debian prometheus, scripts/apt-test.txt")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "xtcp2_rules.yml"]):
        r = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr


def feed_tcp_metrics_from_capture() -> dict:
    """Real kernel columns (a capture) through the TCP metrics hook, as one poll of a
    namespace "deploy-fixture"; returns its sockets by state."""
    import collections

    from xtcp2.netlink.pcap import read_packets
    from xtcp2.netlink.replay import decode_packets
    from xtcp2.tcp_metrics import STATE_NAMES, TCP

    cols = decode_packets(p for _, p in read_packets(str(ROOT / "tests/fixtures/netlink/6_6_44/tcp_10_sockets.pcap")))
    n = cols.n
    TCP.observe(cols, {"netns": "deploy-fixture", "trigger": 0})
    TCP.poll_done(["deploy-fixture"], complete=False)
    return dict(collections.Counter(STATE_NAMES[int(s)] for s in cols["inet_diag_msg_state"][:n]))


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
    fixture_states = feed_tcp_metrics_from_capture()
    register_upstream_metrics()
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
        while not prom_query(pport, "rate(xtcp2_tcp_sent_bytes_total[1m])")["data"]["result"]:
            assert time.monotonic() < deadline + 30, "rate() of the TCP counters never had two samples"
            time.sleep(0.5)
        for p in dashboard()["panels"]:
            for t in p["targets"]:
                if "expr" in t:
                    expr = t["expr"].replace("$__rate_interval", "1m")
                    for var in ("$instance", "$netns", "$container"):
                        expr = expr.replace(var, ".*")
                    res = prom_query(pport, expr)
                    assert res["status"] == "success", t["expr"]
                    if "xtcp2_tcp_" in expr:  # fed below from a real capture
                        assert res["data"]["result"], t["expr"]
        # the TCP panels show what the capture holds
        res = prom_query(pport, 'sum by (state) (xtcp2_tcp_sockets{netns="deploy-fixture"})')["data"]["result"]
        assert {r["metric"]["state"]: float(r["value"][1]) for r in res if float(r["value"][1])} == fixture_states
        # upstream's dashboard and self-test queries
        for expr in ('xtcp_counts{type="error"}', 'rate(xtcp_counts{type="error"}[5m])',
                     'xtcp_histograms{quantile="0.99"}', "xtcp_config_grpc_counts",
                     'xtcp_counts{variable="p", type="count"}', "xtcp_gauge"):
            assert prom_query(pport, expr)["status"] == "success", expr
        def value(expr: str) -> float:
            return float(prom_query(pport, expr)["data"]["result"][0]["value"][1])

        assert value('xtcp_counts{function="Poller", variable="envelopeRows"}') == value("xtcp2_records_total")
        assert value("xtcp_gauge") == value("xtcp2_namespaces")
        with urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v1/rules", timeout=5) as r:
            rules = json.loads(r.read())["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} >= {"Xtcp2DestinationDropping", "Xtcp2Down"}
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
        server.server_close()
