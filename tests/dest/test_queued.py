"""The shared queue wrapper: the collector never blocks, every drop is counted (in the
Prometheus metrics too), close() keeps its deadline. Driven through the unix destination
against a real listener that accepts and never reads (kernel back-pressure)."""
from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import REGISTRY

from xtcp2.dest import open_destination

from .helpers import config, make_payloads


def metric(name: str, dest: str) -> float:
    return REGISTRY.get_sample_value(name, {"dest": dest}) or 0.0


@pytest.fixture
def stuck_listener(tmp_path):
    path = str(tmp_path / "stuck.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    yield path
    s.close()


def test_send_never_blocks_and_drops_are_counted(stuck_listener):
    drops0 = metric("xtcp2_dest_dropped_records_total", "unix")
    sent0 = metric("xtcp2_dest_sent_records_total", "unix")
    d = open_destination(f"unix:{stuck_listener}?queue=50&timeout=0.3&flushTimeout=0.5", config())
    payloads = make_payloads(400, 20) * 50  # 1000 payloads of ~5 KB: far more than the socket buffers
    t0 = time.monotonic()
    for p, n in payloads:
        d.send(p, n)
    took = time.monotonic() - t0
    assert took < 1.0, f"send() blocked: {took:.2f}s for {len(payloads)} payloads"
    assert d.queue_depth <= 50
    assert REGISTRY.get_sample_value("xtcp2_dest_queue_depth", {"dest": "unix"}) <= 50
    t0 = time.monotonic()
    d.close()
    assert time.monotonic() - t0 < 0.5 + 2 + 0.5, "close() must keep its deadline"
    produced = sum(n for _, n in payloads)
    assert d.sent_records + d.dropped_records == produced
    assert d.dropped_records > 0
    assert metric("xtcp2_dest_dropped_records_total", "unix") - drops0 == d.dropped_records
    assert metric("xtcp2_dest_sent_records_total", "unix") - sent0 == d.sent_records
    assert REGISTRY.get_sample_value("xtcp2_dest_queue_depth", {"dest": "unix"}) == 0


def test_down_at_start_starts_anyway_and_counts_on_close(tmp_path, caplog):
    errors0 = metric("xtcp2_dest_errors_total", "unixgram")
    d = open_destination(f"unixgram:{tmp_path}/nobody.sock?flushTimeout=0.3&backoffMax=0.05", config())
    for p, n in make_payloads(100, 10):
        d.send(p, n)
    time.sleep(0.3)
    d.close()
    assert d.sent_records == 0 and d.dropped_records == 100
    assert metric("xtcp2_dest_errors_total", "unixgram") > errors0
    lines = [r.getMessage() for r in caplog.records]
    assert any("cannot connect: No such file or directory" in m for m in lines)
    assert any("closed: 0 records delivered, 100 dropped in total (100 at shutdown)" in m for m in lines)
    # one line per distinct failure, not one per retry
    assert sum("retrying with back-off" in m for m in lines) == 1


def test_send_after_close_is_counted(tmp_path):
    d = open_destination(f"unixgram:{tmp_path}/x.sock?flushTimeout=0", config())
    d.close()
    d.send(b"x", 3)
    assert d.dropped_records == 3


def test_systemd_stop_timeout_covers_the_default_flush_timeout():
    """systemd kills the daemon after TimeoutStopSec: it must outlast the default drain
    (flushTimeout) plus the second the daemon takes beyond it."""
    import pathlib
    import re

    from xtcp2.dest.queued import DEFAULT_FLUSH_TIMEOUT
    unit = (pathlib.Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "xtcp2.service").read_text()
    m = re.search(r"^TimeoutStopSec=(\d+)s$", unit, re.M)
    assert m, "TimeoutStopSec=<seconds>s missing from the unit"
    assert int(m.group(1)) >= DEFAULT_FLUSH_TIMEOUT + 1
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)
