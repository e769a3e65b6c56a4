"""xtcp_config.v1.ConfigService on the asyncio gRPC server.

Daemon calls that may take a while (reconfigure flushes the old destination) run in a
small thread pool so the event loop keeps serving the live streams meanwhile.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Histogram

from ..errors import ConfigError, DestinationError, Xtcp2Error
from ..gen.xtcp_config.v1 import xtcp_config_pb2 as pb
from ..gen.xtcp_config.v1 import xtcp_config_pb2_grpc as pb_grpc
from .grpc_auth import DENIED
from .path_policy import PathDenied, check_paths
from .config_proto import config_from_proto, config_to_proto, duration_to_seconds, seconds_to_duration

log = logging.getLogger(__name__)

REQUESTS = Counter("xtcp2_grpc_requests_total", "gRPC calls by method and status code", ["method", "code"])
REQUEST_SECONDS = Histogram(
    "xtcp2_grpc_request_duration_seconds", "Time to answer a unary gRPC call", ["method"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)

MAX_BURST = 1000
MIN_BURST_INTERVAL_S = 1.0
MAX_BURST_INTERVAL_S = 3600.0


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Undecodable:
    """A request whose bytes are not the method's message. grpc would log a traceback and
    answer UNKNOWN; the handler answers INVALID_ARGUMENT instead (see add_to_server)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _tolerant(cls) -> Callable[[bytes], Any]:
    def deserialize(data: bytes):
        try:
            return cls.FromString(data)
        except DecodeError:
            return Undecodable(cls.DESCRIPTOR.full_name)
    return deserialize


def add_to_server(service: "ConfigService", server) -> None:
    """Register ConfigService as the generated add_ConfigServiceServicer_to_server does,
    with request deserializers that never raise (garbage is refused in `counted`)."""
    desc = pb.DESCRIPTOR.services_by_name["ConfigService"]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            getattr(service, m.name),
            request_deserializer=_tolerant(getattr(pb, m.input_type.name)),
            response_serializer=getattr(pb, m.output_type.name).SerializeToString)
        for m in desc.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(desc.full_name, handlers),))
    server.add_registered_method_handlers(desc.full_name, handlers)


def counted(method: str) -> Callable:
    """Count every call by status and turn Refused / ConfigError into a gRPC status."""

    def deco(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def wrapper(self, request, context):
            t0 = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                try:
                    if isinstance(request, Undecodable):
                        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"request: not a valid {request.type_name} message")
                    return await fn(self, request, context)
                except PathDenied as e:
                    DENIED.labels(method).inc()
                    raise Refused(grpc.StatusCode.PERMISSION_DENIED, str(e)) from None
                except ConfigError as e:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
                except Xtcp2Error as e:
                    raise Refused(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from None
            except Refused as r:
                code = r.code
                await context.abort(r.code, r.message)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as e:  # never let a bug take the server down; say what failed
                if isinstance(e, grpc.aio.AbortError):
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"{method}: {type(e).__name__}: {e}")
            finally:
                REQUESTS.labels(method, code.name).inc()
                REQUEST_SECONDS.labels(method).observe(time.perf_counter() - t0)

        return wrapper

    return deco


class BurstScheduler:
    """Fires daemon.trigger_poll() `count` times `interval` s apart; a new burst replaces the old."""

    def __init__(self, daemon) -> None:
        self._daemon = daemon
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, count: int, interval: float) -> None:
        with self._lock:
            self._stop_locked()
            self._cancel = cancel = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(count, interval, cancel),
                                            name="xtcp2-poll-burst", daemon=True)
            self._thread.start()

    def _run(self, count: int, interval: float, cancel: threading.Event) -> None:
        start = time.monotonic()
        for i in range(count):
            # absolute schedule: a slow trigger does not stretch the burst
            if cancel.wait(max(0.0, start + i * interval - time.monotonic())):
                return
            try:
                self._daemon.trigger_poll()
            except Exception as e:
                log.warning("poll burst: trigger failed: %s", e)

    def _stop_locked(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()


class ConfigService(pb_grpc.ConfigServiceServicer):
    def __init__(self, daemon, executor: Executor) -> None:
        self._daemon = daemon
        self._executor = executor
        self._set_lock = asyncio.Lock()  # one reconfiguration at a time: no lost updates
        self.bursts = BurstScheduler(daemon)

    async def _call(self, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _apply(self, new) -> pb.XtcpConfig:
        check_paths(new, self._daemon.config)  # PathDenied: nothing applied
        try:
            await self._call(self._daemon.reconfigure, new)
        except DestinationError as e:
            # the daemon keeps its current destination and config; say which field to fix
            raise ConfigError("dest", str(e)) from None
        return config_to_proto(self._daemon.config)

    @counted("Get")
    async def Get(self, request, context):
        return pb.GetResponse(config=config_to_proto(self._daemon.config))

    @counted("Set")
    async def Set(self, request, context):
        if not request.HasField("config"):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "config: required")
        async with self._set_lock:
            new = config_from_proto(request.config, self._daemon.config)
            log.info("gRPC Set from %s: applying new configuration", context.peer())
            return pb.SetResponse(config=await self._apply(new))

    @counted("SetPollFrequency")
    async def SetPollFrequency(self, request, context):
        for name in ("poll_frequency", "poll_timeout"):
            if not request.HasField(name):
                raise ConfigError(name, "required")
        freq = duration_to_seconds(request.poll_frequency, "poll_frequency")
        timeout = duration_to_seconds(request.poll_timeout, "poll_timeout")
        async with self._set_lock:
            new = self._daemon.config.replace(poll_frequency=freq, poll_timeout=timeout)
            return pb.SetPollFrequencyResponse(config=await self._apply(new))

    @counted("TriggerPoll")
    async def TriggerPoll(self, request, context):
        await self._call(self._daemon.trigger_poll)
        return pb.TriggerPollResponse()

    @counted("TriggerPollBurst")
    async def TriggerPollBurst(self, request, context):
        if not 1 <= request.count <= MAX_BURST:
            raise ConfigError("count", f"must be between 1 and {MAX_BURST}")
        if not request.HasField("interval"):
            raise ConfigError("interval", "required")
        interval = duration_to_seconds(request.interval, "interval")
        if not MIN_BURST_INTERVAL_S <= interval <= MAX_BURST_INTERVAL_S:
            raise ConfigError("interval", f"must be between {MIN_BURST_INTERVAL_S:g} s and {MAX_BURST_INTERVAL_S:g} s")
        timeout = self._daemon.config.poll_timeout
        if interval <= timeout:
            raise ConfigError("interval", f"must exceed poll_timeout ({timeout:g} s) so each poll completes first")
        self.bursts.start(request.count, interval)
        log.info("gRPC TriggerPollBurst from %s: %d polls %.3g s apart", context.peer(), request.count, interval)
        return pb.TriggerPollBurstResponse(count=request.count, interval=seconds_to_duration(interval))

    @counted("SetS3Upload")
    async def SetS3Upload(self, request, context):
        has_interval = request.HasField("s3_flush_interval")
        if not has_interval and request.s3_parquet_flush_threshold_bytes == 0:
            raise ConfigError("s3_flush_interval", "set s3_flush_interval and/or s3_parquet_flush_threshold_bytes")
        changes: dict[str, object] = {}
        if has_interval:
            changes["s3_flush_interval"] = duration_to_seconds(request.s3_flush_interval, "s3_flush_interval")
        if request.s3_parquet_flush_threshold_bytes:
            changes["s3_parquet_flush_threshold_bytes"] = request.s3_parquet_flush_threshold_bytes
        cfg = self._daemon.config
        if not cfg.dest.startswith("s3parquet:"):
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"SetS3Upload only applies to an s3parquet destination; dest is {cfg.dest!r}")
        missing = [k for k in changes if not hasattr(cfg, k)]
        if missing:
            raise Refused(grpc.StatusCode.UNIMPLEMENTED,
                          f"{missing[0]}: this build's s3parquet destination has no runtime upload timing")
        async with self._set_lock:
            new = self._daemon.config.replace(**changes)
            return pb.SetS3UploadResponse(config=await self._apply(new))
