"""The pieces of the clickhouse-pipeline and lifecycle-coverage flavors that run outside
a guest: the monitor-line parser and growth rule the runner applies, the daemon's
closing line the pipeline reconciles against, and the host's coverage merge."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import need
from tests.servers.fixtures import tansu  # noqa: F401  (fixture)
from xtcp2.tools import microvm_clickpipe as cp
from xtcp2.tools import microvm_coverage as mc

ROOT = Path(__file__).resolve().parents[2]


def test_parse_rows_reads_upstreams_heartbeat_format():
    lines = [
        "XTCP2_CLICKPIPE_ROWS 2026-12-06T13:55:33Z rows=358 netns=1 container_id=0 kafka_exc=0 reb=0 msgs=33 disk=0\r",
        "noise XTCP2_CLICKPIPE_ROWS rows=5",
        "XTCP2_CLICKPIPE_ROWS 2026-12-06T13:55:39Z rows=526 netns=2 container_id=3 kafka_exc=1 reb=2 msgs=45 disk=17",
    ]
    assert cp.parse_rows(lines) == [
        dict(rows=358, netns=1, container_id=0, kafka_exc=0, reb=0, msgs=33, disk=0),
        dict(rows=526, netns=2, container_id=3, kafka_exc=1, reb=2, msgs=45, disk=17)]


@pytest.mark.parametrize("rows, ok", [
    ([0, 358, 526, 526], True),
    ([0, 358], False),             # one rise is not a trend
    ([0, 0, 0], False),
    ([], False),
    ([10, 20, 15, 30], False),     # rows fell: no TTL runs in a short boot
    ([-1, 10, 20], False),         # a failed monitor query
])
def test_rows_grew_needs_two_rises_and_no_fall(rows, ok):
    assert cp.rows_grew(rows)[0] is ok


@pytest.mark.servers
def test_delivered_line_is_what_the_kafka_destination_logs(tansu, caplog):  # noqa: F811
    from tests.dest.helpers import config, make_payloads
    from xtcp2.dest import open_destination
    tansu.create_topic("xtcp")
    with caplog.at_level(logging.INFO):
        d = open_destination(f"kafka:{tansu.bootstrap}?topic=xtcp", config())
        for p, n in make_payloads(300, 100):
            d.send(p, n)
        d.close()
    assert cp.delivered_by_daemon(caplog.text) == (300, 0)
    assert cp.delivered_by_daemon(caplog.text, "tcp") is None


def test_delivered_line_with_drops():
    # the other branch of xtcp2/dest/queued.py's closing line
    log = "kafka 127.0.0.1:9092: closed: 1000 records delivered, 2000 dropped in total (5 at shutdown)"
    assert cp.delivered_by_daemon(log) == (1000, 2000)


def _measured(share: Path, code: str) -> None:
    """A real python process measured through coverage's subprocess hook, as in the guest."""
    rc = share / "rc"
    rc.write_text(mc.rc_text(str(share / ".coverage")))
    env = {**os.environ, "COVERAGE_PROCESS_START": str(rc), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
    rc.unlink()


@pytest.fixture
def coverage_module():
    return need.module("coverage")


def test_host_merges_daemon_and_selftest_data(tmp_path, coverage_module):
    _measured(tmp_path, "import xtcp2.daemon")
    _measured(tmp_path, "import xtcp2.tools.selftest")
    assert len(list(tmp_path.glob(".coverage.*"))) == 2
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        assert mc.combine_and_report(str(tmp_path), f)
    text = out.read_text()
    assert "XTCP2_COVERAGE_COMBINED data_files=2" in text and text.rstrip().endswith("XTCP2_COVERAGE_REPORT_PASS")
    assert not list(tmp_path.glob(".coverage.*"))  # combined into .coverage
    data = coverage_module.CoverageData(str(tmp_path / ".coverage"))
    data.read()
    files = {os.path.relpath(f, ROOT): len(data.lines(f)) for f in data.measured_files()}
    assert files["xtcp2/daemon.py"] > 0 and files["xtcp2/tools/selftest.py"] > 0
    assert not any(f.startswith("xtcp2/gen/") for f in files)
    totals = json.loads((tmp_path / mc.REPORT_JSON).read_text())["totals"]
    assert 0 < totals["percent_covered"] < 100
    assert "xtcp2/daemon.py" in (tmp_path / mc.REPORT_TXT).read_text()


def test_host_merge_fails_without_the_daemons_data(tmp_path, coverage_module):
    _measured(tmp_path, "import xtcp2.tools.selftest")
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        assert not mc.combine_and_report(str(tmp_path), f)
    assert "daemon_lines=0" in out.read_text() and "XTCP2_COVERAGE_REPORT_FAIL" in out.read_text()
    with open(out, "w") as f:
        assert not mc.combine_and_report(str(tmp_path / "nothing-here"), f)


def test_clear_share_removes_only_coverage_files(tmp_path):
    for name in (".coverage", ".coverage.h.pid1.x", mc.REPORT_TXT, "keep.txt"):
        (tmp_path / name).write_text("x")
    assert mc.clear_share(str(tmp_path)) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_merge_cli_rejects_bad_arguments(tmp_path):
    for args, rc in (([], 2), (["-x"], 2), ([str(tmp_path / "no")], 2)):
        r = subprocess.run([sys.executable, "-m", "xtcp2.tools.microvm_coverage", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == rc and len(r.stderr.strip().splitlines()) == 1, r.stderr
