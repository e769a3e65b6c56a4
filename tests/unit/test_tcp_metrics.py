"""xtcp2/tcp_metrics.py on hand-made columns: the counter rules that real traffic rarely
hits on cue (one socket twice in a batch, the baseline, the label cap, partial polls).
The same module against `ss` and real connections: tests/api/test_tcp_metrics.py."""
from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from xtcp2.netlink.decode import BytesColumn
from xtcp2.tcp_metrics import TRIGGER_CLOSE, TRIGGER_OPEN, TRIGGER_POLL, TRIGGER_REFRESH, TcpMetrics


def cols(cookies, acked, state=1, rtt=100, **extra) -> dict:
    n = len(cookies)
    out = {"inet_diag_msg_socket_cookie": np.array(cookies, np.uint64),
           "tcp_info_bytes_acked": np.array(acked, np.uint64),
           "tcp_info_bytes_received": np.zeros(n, np.uint64),
           "tcp_info_total_retrans": np.zeros(n, np.uint32),
           "inet_diag_msg_state": np.full(n, state, np.uint8),
           "tcp_info_rtt": np.full(n, rtt, np.uint32)}
    out.update(extra)
    return out


def strings(values: list[str]) -> BytesColumn:
    width = max(len(v) for v in values)
    data = np.zeros((len(values), width), np.uint8)
    for i, v in enumerate(values):
        data[i, :len(v)] = np.frombuffer(v.encode(), np.uint8)
    return BytesColumn(data, np.array([len(v) for v in values], np.uint16))


def read(tm: TcpMetrics, name: str, **labels) -> float:
    reg = CollectorRegistry()
    reg.register(tm)
    v = reg.get_sample_value(name, labels)
    assert v is not None, (name, labels)
    return v


def test_increases_once_per_socket_and_baseline():
    tm = TcpMetrics()
    tm.observe(cols([1, 2], [1000, 2000]), {"netns": "a", "trigger": TRIGGER_POLL})
    tm.poll_done(["a"], complete=True)  # the baseline: history before it is not counted
    assert read(tm, "xtcp2_tcp_sent_bytes_total", netns="a", container="") == 0
    tm.observe(cols([1, 2], [1500, 2000]), {"netns": "a", "trigger": TRIGGER_POLL})
    tm.poll_done(["a"], complete=True)
    assert read(tm, "xtcp2_tcp_sent_bytes_total", netns="a", container="") == 500
    # a new socket opens and closes within one batch (bpf: staged together), with a
    # close of a known one: the new one counts from zero, once, at its largest value
    batch = cols([7, 7, 1], [300, 900, 1600],
                 trigger=np.array([TRIGGER_OPEN, TRIGGER_CLOSE, TRIGGER_CLOSE], np.uint64))
    tm.observe(batch, {"netns": "a"})
    assert read(tm, "xtcp2_tcp_sent_bytes_total", netns="a", container="") == 500 + 900 + 100
    assert read(tm, "xtcp2_tcp_opens_total", netns="a", container="") == 1
    assert read(tm, "xtcp2_tcp_closes_total", netns="a", container="") == 2
    # a closing socket never makes the counter go down; closed ones are forgotten
    tm.observe(cols([2], [2100]), {"netns": "a", "trigger": TRIGGER_POLL})
    tm.poll_done(["a"], complete=True)
    assert read(tm, "xtcp2_tcp_sent_bytes_total", netns="a", container="") == 1600
    assert len(tm._cookies) == 1


def test_gauges_replace_at_poll_end_and_other_only_at_complete_polls():
    tm = TcpMetrics(max_groups=1)
    netns = strings(["a", "a", "b", "c"])
    tm.observe(cols([1, 2, 3, 4], [0] * 4, netns=netns), {"trigger": TRIGGER_POLL})
    assert read(tm, "xtcp2_tcp_sockets", netns="other", container="", state="established") == 0  # not yet
    tm.poll_done(["a", "b", "c"], complete=True)
    assert read(tm, "xtcp2_tcp_sockets", netns="a", container="", state="established") == 2
    assert read(tm, "xtcp2_tcp_sockets", netns="other", container="", state="established") == 2  # b and c
    assert read(tm, "xtcp2_tcp_rtt_seconds_gcount", netns="a", container="") == 2
    # a partial poll (bpf refresh of b): "other" also holds c, so it waits for a complete one
    tm.observe(cols([3], [0], state=10, rtt=0), {"netns": "b", "trigger": TRIGGER_REFRESH})
    tm.poll_done(["b"], complete=False)
    assert read(tm, "xtcp2_tcp_sockets", netns="other", container="", state="established") == 2
    # a complete poll without a: its label set is freed, b takes it
    tm.observe(cols([3], [0]), {"netns": "b", "trigger": TRIGGER_POLL})
    tm.poll_done(["b"], complete=True)
    reg = CollectorRegistry()
    reg.register(tm)
    assert {s.labels["netns"] for fam in reg.collect() for s in fam.samples
            if fam.name == "xtcp2_tcp_sockets"} == {"other"}
    tm.observe(cols([3], [0]), {"netns": "b", "trigger": TRIGGER_POLL})
    tm.poll_done(["b"], complete=True)
    assert read(tm, "xtcp2_tcp_sockets", netns="b", container="", state="established") == 1


def test_container_label_from_the_records():
    tm = TcpMetrics()
    tm.observe(cols([1, 2, 3], [0] * 3, container_name=strings(["web", "web", "db"])),
               {"netns": "n", "trigger": TRIGGER_POLL})
    tm.poll_done(["n"], complete=True)
    assert read(tm, "xtcp2_tcp_sockets", netns="n", container="web", state="established") == 2
    assert read(tm, "xtcp2_tcp_sockets", netns="n", container="db", state="established") == 1


def test_container_label_falls_back_to_the_short_id():
    """-resolveContainerId without -enrichContainer: ids only; a name wins where known."""
    a, b = "a" * 64, "b" * 64
    tm = TcpMetrics()
    tm.observe(cols([1, 2, 3, 4], [0] * 4, container_name=strings(["web", "", "", ""]),
                    container_id=strings([a, a, b, ""])), {"netns": "n", "trigger": TRIGGER_POLL})
    tm.observe(cols([5], [0]), {"netns": "m", "trigger": TRIGGER_POLL, "container_id": b})
    tm.poll_done(["n", "m"], complete=True)
    assert read(tm, "xtcp2_tcp_sockets", netns="n", container="web", state="established") == 1
    assert read(tm, "xtcp2_tcp_sockets", netns="n", container="a" * 12, state="established") == 1
    assert read(tm, "xtcp2_tcp_sockets", netns="n", container="b" * 12, state="established") == 1
    assert read(tm, "xtcp2_tcp_sockets", netns="n", container="", state="established") == 1
    assert read(tm, "xtcp2_tcp_sockets", netns="m", container="b" * 12, state="established") == 1


def test_cookie_table_keeps_every_socket_through_merges_and_drops():
    """The per-socket memory behind the counters, against a dict doing the same: batches
    of new and known cookies (merged into the big part at their sorted places), closes
    forgotten, and sockets unseen since a generation dropped."""
    from xtcp2.tcp_metrics import NC, _CookieTable

    rng = np.random.default_rng(7)
    table, ref = _CookieTable(), {}
    live = np.empty(0, np.uint64)
    for gen in range(1, 40):
        new = rng.integers(1, 1 << 63, 700, dtype=np.uint64)
        known = rng.choice(live, min(len(live), 300), replace=False) if len(live) else live
        ck = np.unique(np.concatenate([new, known]))
        cur = rng.integers(0, 1 << 40, (len(ck), NC), dtype=np.uint64)
        delta = table.update(ck, cur, gen, count_new=True)
        for c, row, d in zip(ck.tolist(), cur, delta):
            prev = ref.get(c)
            want = row if prev is None else np.where(row > prev[0], row - prev[0], 0)
            assert (d == want).all()
            ref[c] = (row if prev is None else np.maximum(prev[0], row), gen)
        live = np.fromiter(ref, np.uint64, len(ref))
        if gen % 7 == 0:
            gone = rng.choice(live, 100, replace=False)
            table.forget(gone)
            for c in gone.tolist():
                del ref[c]
            table.compact(None)
        if gen % 11 == 0:
            table.compact(gen - 3)
            ref = {c: v for c, v in ref.items() if v[1] >= gen - 3}
        live = np.fromiter(ref, np.uint64, len(ref))
        keys = np.concatenate([p[0] for p in table.parts])
        assert len(table) == len(ref) and set(keys.tolist()) == set(ref)
        for keys, vals, _ in table.parts:
            assert (keys[1:] > keys[:-1]).all()
            for c, v in zip(keys.tolist(), vals):
                assert (v == ref[c][0]).all()
