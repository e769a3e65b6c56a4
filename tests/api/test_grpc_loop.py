"""Every gRPC server of a process runs on one event loop (xtcp2.api.grpc_server.grpc_loop):
stopping one server ends its own streams only, and leaves the loop running for the next."""
from __future__ import annotations

import gc
import threading

import grpc
import pytest

from xtcp2.api.grpc_server import grpc_loop
from xtcp2.config import Config
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as fr
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2_grpc as fr_grpc

from ..waiting import wait_for
from .conftest import RunningDaemon

pytestmark = pytest.mark.root


def _stream(target: str, got: list, ended: threading.Event) -> None:
    """Reads FlatRecords until the server ends the stream (or 60 s pass)."""
    try:
        with grpc.insecure_channel(target) as ch:
            for resp in fr_grpc.XTCPFlatRecordServiceStub(ch).FlatRecords(fr.FlatRecordsRequest(), timeout=60):
                got.append(resp)
    except grpc.RpcError as e:
        got.append(e.code())
    finally:
        ended.set()


def test_stopping_one_server_leaves_the_others_stream_running(start_daemon, socket_netns):
    a, b = start_daemon(poll_frequency=600.0), start_daemon(poll_frequency=600.0)
    assert a.server._loop is b.server._loop is grpc_loop()
    got_a, got_b = [], []
    ended_a, ended_b = threading.Event(), threading.Event()
    for rd, got, ended in ((a, got_a, ended_a), (b, got_b, ended_b)):
        threading.Thread(target=_stream, args=(rd.target, got, ended), daemon=True).start()
        wait_for(lambda rd=rd: rd.server.subscribers(), 10, "the stream client to subscribe", 0.02)

    a.server.stop()
    assert ended_a.wait(10), "the stopped server's stream did not end"
    assert not ended_b.is_set(), f"stopping one server ended the other's stream: {got_b}"

    before = len(got_b)
    b.daemon.trigger_poll()
    wait_for(lambda: len(got_b) >= before + socket_netns["sockets"], 20,
             "the running server's stream to carry a whole poll after the other server stopped")
    assert not ended_b.is_set()
    assert grpc_loop().is_running() and not grpc_loop().is_closed()


def _pollers() -> set[str]:
    """grpc.aio's completion-queue poller threads alive now."""
    return {t.name for t in threading.enumerate() if "_poll_wrapper" in repr(getattr(t, "_target", None))}


def test_one_grpc_aio_poller_serves_server_after_server(socket_netns):
    """A server collected after its stop no longer takes grpc.aio's completion queue and
    its poller thread down with it (20 start/stop cycles started 20 pollers before)."""
    seen: set[str] = set()
    for _ in range(3):
        rd = RunningDaemon(Config(netns=[socket_netns["name"]], grpc_port=0, dest="null", poll_frequency=600.0,
                                  reconcile_before_poll=False).validate())
        seen |= _pollers()
        rd.close()
        del rd
        gc.collect()
        seen |= _pollers()
    assert len(seen) == 1, f"grpc.aio started a poller per server: {sorted(seen)}"
