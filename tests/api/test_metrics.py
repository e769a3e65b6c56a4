"""The metrics endpoint of a running daemon, parsed as Prometheus text and scraped by a real
Prometheus server (Debian `prometheus`)."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xtcp2.api.metrics_http import parse_listen, start_metrics_server
from xtcp2.config import Config
from xtcp2.errors import ConfigError, Xtcp2Error

from .. import need
from ..daemon_process import end

pytestmark = pytest.mark.root

# Every metric the control-plane issue asks for, by name as exposed.
REQUIRED = [
    # polling
    "xtcp2_polls_total", "xtcp2_poll_duration_seconds", "xtcp2_sockets_total", "xtcp2_records_total",
    "xtcp2_records_by_trigger_total", "xtcp2_poll_ticks_skipped_total", "xtcp2_sink_join_errors_total",
    "xtcp2_namespaces", "xtcp2_netlink_errors_total", "xtcp2_decode_errors_total",
    # namespaces discovered / removed
    "xtcp2_namespaces_added_total", "xtcp2_namespaces_removed_total",
    # destination
    "xtcp2_dest_sent_records_total", "xtcp2_dest_sent_bytes_total", "xtcp2_dest_errors_total",
    "xtcp2_dest_dropped_records_total", "xtcp2_dest_queue_depth",
    # gRPC clients and drops
    "xtcp2_grpc_stream_clients", "xtcp2_grpc_stream_dropped_records_total", "xtcp2_grpc_requests_total",
    # BPF events and ring-buffer drops
    "xtcp2_bpf_events_total", "xtcp2_bpf_ringbuf_drops_total",
    # process
    "xtcp2_process_cpu_seconds_total", "xtcp2_process_resident_memory_bytes", "xtcp2_process_open_fds",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exposed_names(text: str) -> set[str]:
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        names.update(s.name for s in fam.samples)
    return names


@pytest.fixture
def daemon_with_metrics(start_daemon):
    rd = start_daemon(poll_frequency=0.5, poll_timeout=0.4)
    ms = start_metrics_server(Config(prom_listen="127.0.0.1:0", prom_path="/metrics"))
    rd.wait_loops(2)
    yield rd, ms
    ms.stop()


def test_text_format_has_every_metric(daemon_with_metrics, socket_netns):
    rd, ms = daemon_with_metrics
    body = urllib.request.urlopen(ms.url, timeout=5).read().decode()
    names = exposed_names(body)
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"not exposed: {missing}"
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    polls = [s.value for s in fams["xtcp2_polls"].samples if s.name == "xtcp2_polls_total"]
    assert polls and polls[0] >= 2
    rss = fams["xtcp2_process_resident_memory_bytes"].samples[0].value
    assert 10e6 < rss < 10e9
    fds = fams["xtcp2_process_open_fds"].samples[0].value
    assert fds >= 3
    cpu = {s.labels["mode"]: s.value for s in fams["xtcp2_process_cpu_seconds"].samples}
    assert set(cpu) == {"user", "system"} and cpu["user"] > 0
    # per-namespace labels only on the TCP metrics, capped by -metricsMaxNetns (test_tcp_metrics.py)
    assert {s.labels["netns"] for s in fams["xtcp2_tcp_sockets"].samples} <= {socket_netns["name"], "other"}
    other = [ln for ln in body.splitlines() if socket_netns["name"] in ln and not ln.startswith("xtcp2_tcp_")]
    assert not other, other[:3]


def test_only_the_configured_path(daemon_with_metrics):
    _, ms = daemon_with_metrics
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{ms.port}/", timeout=5)
    assert e.value.code == 404


def test_custom_path_and_bind_errors():
    ms = start_metrics_server(Config(prom_listen="127.0.0.1:0", prom_path="/x/m"))
    try:
        assert "xtcp2_polls_total" in urllib.request.urlopen(ms.url, timeout=5).read().decode()
        with pytest.raises(Xtcp2Error, match=r"metrics: cannot listen on 127\.0\.0\.1:%d" % ms.port):
            start_metrics_server(Config(prom_listen=f"127.0.0.1:{ms.port}"))
    finally:
        ms.stop()
    with pytest.raises(ConfigError, match="prom_listen"):
        parse_listen("localhost")
    assert parse_listen("[::1]:9088") == ("::1", 9088)
    assert parse_listen(":9088") == ("0.0.0.0", 9088)


@pytest.mark.slow
def test_scraped_by_real_prometheus(daemon_with_metrics, tmp_path):
    prom = need.binary("prometheus", "Debian prometheus, scripts/apt-test.txt")
    rd, ms = daemon_with_metrics
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: xtcp2\n"
        f"    metrics_path: {ms.path}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{ms.port}']\n")
    proc = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    try:
        def query(q: str) -> list:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            data = json.load(urllib.request.urlopen(url, timeout=5))
            assert data["status"] == "success", data
            return data["data"]["result"]

        deadline = time.monotonic() + 40
        polls: list = []
        while time.monotonic() < deadline:
            try:
                polls = query('xtcp2_polls_total{job="xtcp2"}')
                if polls and float(polls[0]["value"][1]) >= 2:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        assert polls, "Prometheus never stored xtcp2_polls_total: " + (tmp_path / "prometheus.log").read_text()[-3000:]
        assert float(query('up{job="xtcp2"}')[0]["value"][1]) == 1
        assert float(query("xtcp2_process_resident_memory_bytes")[0]["value"][1]) > 0
        assert query("xtcp2_poll_duration_seconds_count")
        assert float(query("sum(xtcp2_sockets_total)")[0]["value"][1]) > 0
    finally:
        end(proc)
