"""xtcp2's metric classes (xtcp2/prom_light.py) against prometheus_client's semantics:
what a scrape of the REGISTRY shows after each kind of update."""
from __future__ import annotations

import itertools

import pytest
from prometheus_client import REGISTRY, Counter as PromCounter, Histogram as PromHistogram, generate_latest

from xtcp2.prom_light import Counter, Gauge, Histogram

from ..prom import sample

_ids = itertools.count()


def _name(stem: str) -> str:
    return f"xtcp2_test_{stem}_{next(_ids)}"


def test_counter_and_labels_read_as_prometheus_client_writes_them():
    ours, theirs = _name("c"), _name("c")
    c, p = Counter(ours + "_total", "h", ["dest"]), PromCounter(theirs + "_total", "h", ["dest"])
    for m in (c, p):
        m.labels("kafka").inc()
        m.labels(dest="kafka").inc(2.5)
        m.labels("null")
    assert sample(REGISTRY, ours + "_total", dest="kafka") == 3.5
    assert sample(REGISTRY, ours + "_total", dest="null") == 0.0
    text = generate_latest(REGISTRY).decode()
    ours_lines = [line.replace(ours, "X") for line in text.splitlines() if ours in line]
    theirs_lines = [line.replace(theirs, "X") for line in text.splitlines()
                    if theirs in line and "_created" not in line]
    assert ours_lines == theirs_lines


def test_histogram_buckets_are_cumulative_with_le_labels_as_prometheus_client_writes_them():
    ours, theirs = _name("h"), _name("h")
    h = Histogram(ours, "h", buckets=(0.1, 1, 5, 1e7))   # 1e7: Go writes it 1e+07
    p = PromHistogram(theirs, "h", buckets=(0.1, 1, 5, 1e7))
    for v in (0.05, 0.1, 0.7, 3, 99):
        h.observe(v)
        p.observe(v)
    text = generate_latest(REGISTRY).decode()
    ours_lines = [line.replace(ours, "X") for line in text.splitlines() if ours in line]
    theirs_lines = [line.replace(theirs, "X") for line in text.splitlines()
                    if theirs in line and "_created" not in line]
    assert ours_lines == theirs_lines
    assert sample(REGISTRY, ours + "_bucket", le="0.1") == 2
    assert sample(REGISTRY, ours + "_count") == 5


def test_gauge_set_inc_dec_remove_clear():
    name = _name("g")
    g = Gauge(name, "h", ["k"])
    g.labels("a").set(5)
    g.labels("a").dec(2)
    g.labels("b").inc()
    assert sample(REGISTRY, name, k="a") == 3 and sample(REGISTRY, name, k="b") == 1
    g.remove("a")
    assert REGISTRY.get_sample_value(name, {"k": "a"}) is None
    g.clear()
    assert REGISTRY.get_sample_value(name, {"k": "b"}) is None


def test_misuse_fails_as_in_prometheus_client():
    c = Counter(_name("m") + "_total", "h", ["a"])
    with pytest.raises(ValueError):
        c.inc()                       # labelled: needs .labels()
    with pytest.raises(ValueError):
        c.labels("x", "y")            # one label name
    with pytest.raises(ValueError):
        c.labels("x").inc(-1)         # counters only go up
    name = _name("d")
    Counter(name, "h")
    with pytest.raises(ValueError):
        Gauge(name, "h")              # one name, one series
