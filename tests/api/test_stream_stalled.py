"""A client that opens a live stream and never reads, with grpc's default flow control
(BDP probing: its library keeps taking data until the stream window, grown to a few
MiB, is full). Once that window is full nothing more is written to it: it costs its own
bounded queue and a drop counter, while a reading client next to it keeps receiving."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from xtcp2.config import Config

from ..prom import sample
from ..holder import netns_holding
from .conftest import RunningDaemon

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONNECTIONS = 2000   # 4,001 sockets, polled 4 times a second: ~16,000 records/s
FILL_MAX_S = 60.0    # the stalled client's window fills in a few seconds here

CLIENTS = r"""
import sys, threading, grpc
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb, xtcp_flat_record_pb2_grpc as g
target = sys.argv[1]
opts = [("grpc.use_local_subchannel_pool", 1)]  # one connection each; grpc's default BDP probing
stalled_ch, reader_ch = grpc.insecure_channel(target, options=opts), grpc.insecure_channel(target, options=opts)
stalled = g.XTCPFlatRecordServiceStub(stalled_ch).FlatRecords(pb.FlatRecordsRequest())  # never iterated
print("stalled", flush=True)
sys.stdin.readline()  # the reader starts once the test has told the two apart
reader = g.XTCPFlatRecordServiceStub(reader_ch).FlatRecords(pb.FlatRecordsRequest())
def read():
    try:
        for _ in reader:
            pass
    except grpc.RpcError:
        pass
threading.Thread(target=read, daemon=True).start()
print("reader", flush=True)
sys.stdin.read()
stalled.cancel(); reader.cancel()
"""


@pytest.fixture
def big_netns():
    with netns_holding("xtcp2api-stall", CONNECTIONS) as name:
        yield name


def _wait_subscribers(rd, n: int) -> list:
    deadline = time.monotonic() + 20
    while len(rd.server.subscribers()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    subs = rd.server.subscribers()
    assert len(subs) == n
    return subs


def test_never_reading_client_costs_nothing_once_its_window_is_full(big_netns, registry):
    cfg = Config(netns=[big_netns], grpc_port=0, dest="null", poll_frequency=0.25, poll_timeout=0.25,
                 reconcile_before_poll=False).validate()
    rd = RunningDaemon(cfg)
    env = dict(os.environ, PYTHONPATH=str(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    proc = subprocess.Popen([sys.executable, "-c", CLIENTS, rd.target], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stalled"
        (stalled,) = _wait_subscribers(rd, 1)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "reader"
        reader = next(s for s in _wait_subscribers(rd, 2) if s is not stalled)
        # the fill: the stalled client's library takes records until its window is full
        t0, last, still = time.monotonic(), -1, 0.0
        while time.monotonic() - t0 < FILL_MAX_S:
            time.sleep(0.5)
            if stalled.sent_records == last:
                still += 0.5
                if still >= 3.0:
                    break
            else:
                last, still = stalled.sent_records, 0.0
        assert still >= 3.0, f"still writing to the stalled client after {FILL_MAX_S}s: {stalled.sent_records}"
        filled = stalled.sent_records
        assert filled > 0
        drops0 = sample(registry, "xtcp2_grpc_stream_dropped_records_total", method="FlatRecords")
        d0, r0 = stalled.dropped_records, reader.sent_records
        time.sleep(3.0)
        # after the fill: not one more write to it; its records drop at its own queue, counted
        assert stalled.sent_records == filled
        assert stalled.dropped_records > d0
        assert sample(registry, "xtcp2_grpc_stream_dropped_records_total", method="FlatRecords") - drops0 \
            >= stalled.dropped_records - d0
        # and the reading client next to it kept receiving
        assert reader.sent_records > r0
        print(f"\nstalled client: {filled} records written during its fill, then none; "
              f"{stalled.dropped_records - d0} dropped in 3 s; reader got {reader.sent_records - r0}")
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        rd.close()
