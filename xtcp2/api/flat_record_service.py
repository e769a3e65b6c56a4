"""xtcp_flat_record.v1.XTCPFlatRecordService: live records to any number of clients.

Registered with an identity response serializer: the FanOut hands over responses
already serialized once per envelope, so N clients cost N socket writes, not N
serializations. Each client's own queue is bounded; when a client reads too slowly
its queue fills and further records for it are dropped and counted, for it alone.
At the end of a stream the trailing metadata `xtcp2-dropped-records` tells the
client how many records it missed.
"""
from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client import Counter

from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from .config_service import REQUESTS
from ..errors import ConfigError
from .record_fanout import STREAM_SENT, STREAM_UNSENT, FanOut, Subscriber
from .record_filter import METADATA_KEY, RecordFilter

log = logging.getLogger(__name__)

SERVICE = "xtcp_flat_record.v1.XTCPFlatRecordService"
STREAM_REFUSED = Counter("xtcp2_grpc_stream_refused_total", "Stream clients refused because the client limit was reached")
ENVELOPE_ERRORS = Counter("xtcp2_grpc_stream_envelope_errors_total", "Envelopes that could not be split into records")

DEFAULT_MAX_CLIENTS = 64
IDLE_CHECK_S = 1.0


class FlatRecordService:
    def __init__(self, daemon, fanout: FanOut, max_clients: int = DEFAULT_MAX_CLIENTS,
                 poll_grace: float | None = None) -> None:
        self._daemon = daemon
        self._fanout = fanout
        self._max_clients = max_clients
        self._poll_grace = poll_grace
        self.stopping = asyncio.Event()
        # the handlers running now, and their request readers: what a stop may cancel
        self.tasks: set[asyncio.Task] = set()

    def handler(self) -> grpc.GenericRpcHandler:
        ident = lambda b: b  # noqa: E731 - responses arrive serialized
        return grpc.method_handlers_generic_handler(SERVICE, {
            "FlatRecords": grpc.unary_stream_rpc_method_handler(
                self.FlatRecords, request_deserializer=pb.FlatRecordsRequest.FromString, response_serializer=ident),
            "PollFlatRecords": grpc.stream_stream_rpc_method_handler(
                self.PollFlatRecords, request_deserializer=pb.PollFlatRecordsRequest.FromString,
                response_serializer=ident),
        })

    def _track(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _admit(self, method: str, context) -> Subscriber:
        self._track(asyncio.current_task())
        if len(self._fanout.subscribers()) >= self._max_clients:
            STREAM_REFUSED.inc()
            REQUESTS.labels(method, "RESOURCE_EXHAUSTED").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"too many stream clients (limit {self._max_clients})")
        keep = None
        for key, value in context.invocation_metadata() or ():
            if key == METADATA_KEY:
                try:
                    keep = RecordFilter.parse(value) or None
                except ConfigError as e:
                    REQUESTS.labels(method, "INVALID_ARGUMENT").inc()
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{METADATA_KEY}: {e}")
        sub = self._fanout.subscribe(method, context.peer(), keep)
        log.info("%s: client %d (%s) connected%s", method, sub.id, sub.peer,
                 f", filter {keep.spec()}" if keep else "")
        return sub

    def _finish(self, sub: Subscriber, context, code: str) -> None:
        self._fanout.unsubscribe(sub)
        REQUESTS.labels(sub.method, code).inc()
        log.info("%s: client %d (%s) gone: %d records sent, %d dropped, %d unsent", sub.method, sub.id, sub.peer,
                 sub.sent_records, sub.dropped_records, sub.unsent_records)
        try:
            context.set_trailing_metadata((("xtcp2-dropped-records", str(sub.dropped_records)),))
        except Exception:  # the call may already be finished (client cancelled)
            pass

    async def _send_next(self, sub: Subscriber, context, timeout: float) -> bool:
        """Write the next queued envelope's records; False if none came within `timeout`."""
        try:
            responses = await self._fanout.next_batch(sub, timeout)
        except ValueError as e:
            ENVELOPE_ERRORS.inc()
            log.warning("live stream: skipping a malformed envelope: %s", e)
            return True
        if responses is None:
            return False
        if not responses:  # everything filtered out
            return True
        sent = 0
        try:
            for r in responses:
                await context.write(r)
                sent += 1
                sub.sent_records += 1  # live: a batch can take long to a slow client
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the call ended under us (client gone, server stopping)
            log.debug("%s: client %d: write failed: %s", sub.method, sub.id, e)
            sub.unsent_records += len(responses) - sent  # the stream ended: not a drop
            STREAM_UNSENT.inc(len(responses) - sent)
            sub.closed = True
        finally:
            STREAM_SENT.labels(sub.method).inc(sent)
        return True

    async def _drain(self, sub: Subscriber, context) -> None:
        """The server is stopping in order: what is queued still goes out (until the
        grace period of the server's stop ends the call)."""
        while not sub.closed and await self._send_next(sub, context, 0):
            pass

    async def FlatRecords(self, request, context):
        sub = await self._admit("FlatRecords", context)
        code = "CANCELLED"
        try:
            while not self.stopping.is_set() and not sub.closed:
                await self._send_next(sub, context, IDLE_CHECK_S)
            await self._drain(sub, context)
            code = "OK"
        finally:
            self._finish(sub, context, code)

    async def PollFlatRecords(self, request_iterator, context):
        """Every request triggers one poll; the client receives all live records meanwhile.

        After the client half-closes, records keep flowing until none arrived for a grace
        period (poll_timeout + 1 s), so the polls it asked for are delivered.
        """
        sub = await self._admit("PollFlatRecords", context)
        loop = asyncio.get_running_loop()
        reading_done = asyncio.Event()

        async def read_requests() -> None:
            try:
                async for _ in request_iterator:
                    await loop.run_in_executor(None, self._daemon.trigger_poll)
            finally:
                reading_done.set()

        reader = asyncio.create_task(read_requests())
        self._track(reader)
        code = "CANCELLED"
        try:
            while not self.stopping.is_set() and not sub.closed:
                got = await self._send_next(sub, context, IDLE_CHECK_S)
                if not got and reading_done.is_set():
                    grace = self._poll_grace if self._poll_grace is not None else self._daemon.config.poll_timeout + 1.0
                    if not await self._send_next(sub, context, grace):
                        break
            await self._drain(sub, context)
            code = "OK"
        finally:
            reader.cancel()
            self._finish(sub, context, code)
