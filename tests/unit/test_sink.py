"""The record sink: one counter, -modulus, stamping, joins and counting for every producer."""
from __future__ import annotations

import time

import numpy as np
from prometheus_client import REGISTRY

from xtcp2.columns import BytesColumn, Columns
from xtcp2.config import Config
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.pipeline import Emitter
from xtcp2.records.sink import RecordSink

T = pb.XtcpFlatRecord


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


class Out:
    """A real Emitter (dest null) and the records it delivered."""

    def __init__(self, **cfg) -> None:
        self.config = Config(dest="null", **cfg)
        self.config.validate()
        self.emitter = Emitter(self.config)
        self.rows: list = []
        self.emitter.add_listener(lambda env: self.rows.extend(env.message().row))
        self.sink = RecordSink(self.config, self.emitter)

    def close(self) -> None:
        self.emitter.close()


def ports(n: int, first: int = 1) -> Columns:
    return Columns(n, {"inet_diag_msg_socket_source_port": np.arange(first, first + n, dtype=np.uint32)})


def test_one_counter_for_every_producer_and_trigger():
    out = Out(hostname="h1", label="lab")
    before = sample("xtcp2_records_total")
    closes = sample("xtcp2_records_by_trigger_total", trigger="close")
    try:
        t0 = time.time_ns()
        assert out.sink.emit(ports(3), {"trigger": T.TRIGGER_POLL, "netns": "a"}) == 3
        assert out.sink.emit(ports(2, 10), {"trigger": T.TRIGGER_CLOSE, "netns": "b"}) == 2
        out.sink.flush()
        assert [r.record_counter for r in out.rows] == [1, 2, 3, 4, 5]
        assert [r.trigger for r in out.rows] == [0, 0, 0, T.TRIGGER_CLOSE, T.TRIGGER_CLOSE]
        assert all(r.hostname == "h1" and r.label == "lab" and r.timestamp_ns >= t0 for r in out.rows)
        assert sample("xtcp2_records_total") - before == 5
        assert sample("xtcp2_records_by_trigger_total", trigger="close") - closes == 2
    finally:
        out.close()


def test_modulus_keeps_every_mth_socket_across_batches():
    out = Out(modulus=3)
    try:
        # 7 + 5 sockets: sequence numbers 0..11, every third kept
        assert out.sink.emit(ports(7)) == 3
        assert out.sink.emit(ports(5, 100)) == 1
        out.sink.flush()
        assert [r.record_counter for r in out.rows] == [1, 4, 7, 10]
        assert [r.inet_diag_msg_socket_source_port for r in out.rows] == [1, 4, 7, 102]
        assert out.sink.record_counter == 12
    finally:
        out.close()


def test_parts_with_different_constants_become_one_batch():
    out = Out()
    try:
        n = out.sink.emit_parts([(ports(2), {"netns": "one", "trigger": T.TRIGGER_OPEN}),
                                 (ports(1, 9), {"netns": "two", "trigger": T.TRIGGER_CLOSE}),
                                 (Columns(0), {"netns": "empty"})])
        out.sink.flush()
        assert n == 3
        assert [(r.netns, r.trigger, r.record_counter) for r in out.rows] == [
            ("one", T.TRIGGER_OPEN, 1), ("one", T.TRIGGER_OPEN, 2), ("two", T.TRIGGER_CLOSE, 3)]
    finally:
        out.close()


def test_identity_join_adds_columns_and_a_failing_one_loses_nothing():
    out = Out()
    errors = sample("xtcp2_sink_join_errors_total")

    def container(cols: Columns, consts) -> None:
        names = np.zeros((cols.n, 8), np.uint8)
        names[:, :3] = np.frombuffer(b"c42", np.uint8)
        cols["container_id"] = BytesColumn(names, np.full(cols.n, 3, np.uint8))

    def broken(cols: Columns, consts) -> None:
        raise RuntimeError("cache gone")

    try:
        out.sink.add_join(container)
        out.sink.add_join(broken)
        assert out.sink.emit(ports(4)) == 4
        out.sink.flush()
        assert [r.container_id for r in out.rows] == ["c42"] * 4
        assert sample("xtcp2_sink_join_errors_total") - errors == 1
    finally:
        out.close()


def test_tcp_metrics_see_what_the_joins_added():
    """The container label comes from the identity join: it must run before the metrics."""
    out = Out(modulus=2)
    ns = "sink-join-metrics"

    def web(cols: Columns, consts) -> None:
        consts["container_name"] = "web"

    def opens(container: str) -> float:
        return sample("xtcp2_tcp_opens_total", netns=ns, container=container)

    from xtcp2.tcp_metrics import TCP
    groups = TCP.max_groups
    TCP.configure(10**6)  # earlier tests in this process may have filled the label groups
    try:
        out.sink.add_join(web)
        before = opens("web")
        cols = ports(4)
        cols["inet_diag_msg_socket_cookie"] = np.arange(1, 5, dtype=np.uint64)
        cols["inet_diag_msg_state"] = np.full(4, 1, np.uint8)
        assert out.sink.emit(cols, {"trigger": T.TRIGGER_OPEN, "netns": ns}) == 2
        out.sink.flush()
        # every socket counted (before -modulus), under the joined container
        assert opens("web") - before == 4 and opens("") == 0
        assert [r.container_name for r in out.rows] == ["web", "web"]
    finally:
        TCP.configure(groups)
        out.close()


def test_a_batch_larger_than_one_encode_keeps_every_row_in_order():
    # the sink encodes at most ENCODE_ROWS rows per call (bounded memory): the records
    # are the same as one call would give, bytes columns included
    from xtcp2.records import sink as sink_mod
    n = 2 * sink_mod.ENCODE_ROWS + 7
    out = Out(envelope_flush_threshold_rows=10_000_000, envelope_flush_threshold_bytes=1 << 30)
    try:
        addr = np.zeros((n, 16), np.uint8)
        addr[:, 0] = np.arange(n) % 251
        cols = ports(n)
        cols["inet_diag_msg_socket_source"] = BytesColumn(addr, np.where(np.arange(n) % 2, 16, 4).astype(np.uint8))
        cols["tcp_info_rtt"] = np.arange(n, dtype=np.uint32) * 7
        assert out.sink.emit(cols, {"netns": "big"}) == n
        out.sink.flush()
        assert len(out.rows) == n
        assert [r.inet_diag_msg_socket_source_port for r in out.rows] == list(range(1, n + 1))
        assert [r.tcp_info_rtt for r in out.rows] == [7 * i for i in range(n)]
        assert [r.record_counter for r in out.rows] == [out.rows[0].record_counter + i for i in range(n)]
        src = [r.inet_diag_msg_socket_source for r in out.rows]
        assert [len(s) for s in src] == [16 if i % 2 else 4 for i in range(n)]
        assert [s[0] for s in src] == [i % 251 for i in range(n)]
        assert all(r.netns == "big" for r in out.rows)
    finally:
        out.close()
