"""A real `xtcp2` process sending a real namespace's sockets to a real Kafka-wire broker
(Tansu) that dies mid-run: SIGTERM returns within flushTimeout + 1 s, the closing log
line's delivered / dropped counts equal what a real consumer read and what the daemon
produced; errors and queue depth rise during the outage; SIGHUP loses nothing."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from .. import need

need.module("confluent_kafka")

from ..daemon_process import DaemonProcess  # noqa: E402
from ..holder import netns_holding  # noqa: E402
from .test_kafka_shutdown import read_topic  # noqa: E402

pytestmark = [pytest.mark.servers, pytest.mark.root, pytest.mark.slow]



@pytest.fixture
def steady_netns():
    """A namespace whose sockets do not change: every poll yields the same records."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with netns_holding("secrel", 20) as name:
        yield name


def produced_records(log: str) -> int:
    """Records the daemon's polls produced, from its own per-poll log lines."""
    return sum(int(m) for m in re.findall(r" poll \d+: namespaces=\d+ sockets=\d+ records=(\d+)", log))


def closing_counts(log: str) -> tuple[int, int]:
    m = re.search(r"kafka \S+: closed: (\d+) records delivered, (?:(\d+) dropped in total|none dropped)", log)
    assert m, log[-3000:]
    return int(m.group(1)), int(m.group(2) or 0)


def start(netns: str, bootstrap: str, opts: str) -> DaemonProcess:
    return DaemonProcess("--mode", "poll", "-netns", netns, "-frequency", "0.2s",
                         "-dest", f"kafka:{bootstrap}?{opts}")


def test_sigterm_with_broker_dead_keeps_budget_and_counts_exactly(tansu, steady_netns):
    tansu.create_topic("xtcp")
    flush_timeout = 3.0
    d = start(steady_netns, tansu.bootstrap, f"queue=5&flushTimeout={flush_timeout:g}&backoffMax=0.2")
    try:
        d.wait_metric("xtcp2_dest_sent_records_total", 200, dest="kafka")
        # freeze the daemon so nothing is in flight, read what the broker holds, then kill it
        d.signal(signal.SIGSTOP)
        time.sleep(1.0)
        delivered = read_topic(tansu.bootstrap, "xtcp")
        tansu.kill()
        d.signal(signal.SIGCONT)
        errors0 = d.value("xtcp2_dest_errors_total", dest="kafka")
        depth = errors = 0.0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not (depth > 0 and errors > errors0):
            depth = d.value("xtcp2_dest_queue_depth", dest="kafka")
            errors = d.value("xtcp2_dest_errors_total", dest="kafka")
            time.sleep(0.2)
        assert depth > 0 and errors > errors0, f"outage invisible: depth {depth}, errors {errors0} -> {errors}"
        time.sleep(2.5)  # long enough to overflow the queues: drops at run time and at shutdown
        dropped_metric = d.value("xtcp2_dest_dropped_records_total", dest="kafka")
        rc, took = d.stop()
        log = d.log_text()
    finally:
        d.close()
    assert rc == 0, log[-3000:]
    print(f"SIGTERM took {took:.2f}s (flushTimeout {flush_timeout}); produced {produced_records(log)}, "
          f"consumer read {len(delivered)}, log says {closing_counts(log)}, last scraped drops {dropped_metric:.0f}")
    assert took <= flush_timeout + 1.0, f"SIGTERM took {took:.2f}s with flushTimeout={flush_timeout}"
    produced = produced_records(log)
    sent, dropped = closing_counts(log)
    assert sent == len(delivered) > 0
    assert dropped == produced - len(delivered) > 0
    assert 0 < dropped_metric <= dropped
    assert "Counters can only be incremented" not in log and "Traceback" not in log


def test_sighup_reloads_and_loses_nothing(tansu, steady_netns):
    tansu.kill()  # down from the start: every record waits in the daemon's queue
    d = start(steady_netns, tansu.bootstrap, "queue=10000&flushTimeout=10&backoffMax=0.2")
    try:
        d.wait_metric("xtcp2_polls_total", 3)
        for _ in range(2):
            d.signal(signal.SIGHUP)
            time.sleep(0.5)
            assert d.proc.poll() is None, d.log_text()[-3000:]
        polls = d.value("xtcp2_polls_total")
        d.wait_metric("xtcp2_polls_total", polls + 3)  # still polling after the reloads
        assert d.value("xtcp2_dest_queue_depth", dest="kafka") > 0
        tansu.start()
        tansu.create_topic("xtcp")
        d.wait_metric("xtcp2_dest_sent_records_total", 1, dest="kafka")
        rc, took = d.stop()
        log = d.log_text()
    finally:
        d.close()
    assert rc == 0, log[-3000:]
    assert log.count("SIGHUP: configuration reloaded") == 2
    rows = read_topic(tansu.bootstrap, "xtcp")
    ids = [(r.netns, r.record_counter, r.timestamp_ns, r.inet_diag_msg_socket_cookie) for r in rows]
    produced = produced_records(log)
    assert len(ids) == len(set(ids)) == produced, f"{len(ids)} read back of {produced} produced"
    assert closing_counts(log) == (produced, 0)


def test_sigterm_with_broker_hung_keeps_budget(tansu, steady_netns):
    """A broker that accepts connections but never answers (SIGSTOP): the harder case for
    the shutdown deadline. What it received may still land later, so only the budget and
    the closing line's own balance are checked here."""
    tansu.create_topic("xtcp")
    flush_timeout = 2.0
    d = start(steady_netns, tansu.bootstrap, f"queue=5&flushTimeout={flush_timeout:g}&backoffMax=0.2")
    try:
        d.wait_metric("xtcp2_dest_sent_records_total", 100, dest="kafka")
        os.killpg(tansu.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(3)
            rc, took = d.stop()
        finally:
            os.killpg(tansu.proc.pid, signal.SIGCONT)
        log = d.log_text()
    finally:
        d.close()
    assert rc == 0, log[-3000:]
    assert took <= flush_timeout + 1.0, f"SIGTERM took {took:.2f}s with flushTimeout={flush_timeout}"
    sent, dropped = closing_counts(log)
    assert sent + dropped == produced_records(log) and dropped > 0
