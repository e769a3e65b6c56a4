"""Where `xtcp2 top` gets records: the daemon's live stream, or its own local polls.

Both run on a background thread and feed a ConnTable; the screen never waits on them.
A failure (daemon gone, namespace vanished) is kept as `error`, shown on the status
line, and retried: top is a viewer and must not die because its source hiccupped.
"""
from __future__ import annotations

import threading
import time

from .model import ConnTable

BATCH_SECONDS = 0.2


class StreamSource:
    """Records from a running daemon's XTCPFlatRecordService over gRPC."""

    def __init__(self, target: str, table: ConnTable) -> None:
        self.target = target
        self.table = table
        self.error = ""
        self.connected = False
        self._stop = threading.Event()
        self._call = None
        self._thread = threading.Thread(target=self._run, name="top-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import grpc

        from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
        from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2_grpc as pb_grpc

        backoff = 0.5
        while not self._stop.is_set():
            channel = grpc.insecure_channel(self.target)
            try:
                grpc.channel_ready_future(channel).result(timeout=3)
                self._call = pb_grpc.XTCPFlatRecordServiceStub(channel).FlatRecords(pb.FlatRecordsRequest())
                self.connected, self.error, backoff = True, "", 0.5
                batch, last = [], time.monotonic()
                for resp in self._call:
                    batch.append(resp.xtcp_flat_record)
                    if time.monotonic() - last >= BATCH_SECONDS:
                        self.table.ingest(batch)
                        batch, last = [], time.monotonic()
                if batch:
                    self.table.ingest(batch)
                if not self._stop.is_set():
                    self.error = f"{self.target}: stream ended; reconnecting"
            except grpc.FutureTimeoutError:
                self.error = f"cannot reach xtcp2 at {self.target}; retrying"
            except grpc.RpcError as e:
                if not self._stop.is_set():
                    self.error = f"{self.target}: {e.code().name}: {e.details()}; retrying"
            finally:
                self.connected = False
                channel.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def tick(self) -> None:
        """Called by the screen about once a second: drop connections the stream stopped refreshing."""
        self.table.expire()

    def stop(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()


class LocalSource:
    """Polls netlink in this process (no daemon), every `interval` seconds."""

    def __init__(self, interval: float, netns: list[str], table: ConnTable) -> None:
        self.interval = interval
        self.netns = netns
        self.table = table
        self.error = ""
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="top-local", daemon=True)
        self._daemon = None

    def start(self) -> None:
        self._thread.start()

    def _open(self):
        from ..config import Config
        from ..daemon import Daemon

        cfg = Config(dest="null", netns=list(self.netns), poll_frequency=max(self.interval, 0.1),
                     poll_timeout=max(self.interval, 0.1), once=True).validate()
        daemon = Daemon(cfg)
        daemon.add_listener(self._on_envelope)
        return daemon

    def _on_envelope(self, env) -> None:
        self._batch.extend(env.message().row)

    def _run(self) -> None:
        try:
            self._daemon = self._open()
        except Exception as e:  # a missing capability, a bad --netns: shown, not fatal to the screen
            self.error = f"local poll unavailable: {e}"
            return
        while not self._stop.is_set():
            self._batch: list = []
            try:
                self._daemon.poll_once()
                self.connected, self.error = True, ""
            except Exception as e:
                self.error = f"local poll failed: {e}"
            self.table.ingest(self._batch, full_poll=not self.error)
            self._stop.wait(self.interval)

    def tick(self) -> None:
        pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._daemon is not None:
            self._daemon.close()
