"""The loss reporter turns counter increases into one WARNING line with the counts."""
import logging

from prometheus_client import CollectorRegistry, Counter

from xtcp2.api.loss_log import LossReporter


def test_one_line_with_counts_only_when_something_was_lost(caplog):
    reg = CollectorRegistry()
    ring = Counter("xtcp2_bpf_ringbuf_drops_total", "x", registry=reg)
    overruns = Counter("xtcp2_destroy_overruns_total", "x", registry=reg)
    ring.inc(3)  # before the reporter: not reported
    rep = LossReporter(interval=10, registry=reg)
    with caplog.at_level(logging.WARNING, logger="xtcp2.loss"):
        assert rep.report() is None
        ring.inc(40)
        overruns.inc(2)
        line = rep.report()
        assert rep.report() is None   # nothing new since
    assert line is not None
    assert "40 ring-buffer events lost" in line and "43 in total" in line
    assert "2 destroy-broadcast overruns" in line
    assert [r.getMessage() for r in caplog.records] == [line]
