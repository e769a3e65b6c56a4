"""The gRPC control plane: ConfigService, XTCPFlatRecordService, health, reflection.

Runs a grpc.aio server on one dedicated thread with its own event loop. One thread
serves every client, so however many stream clients connect, the collector competes
with a single thread for the interpreter, and a stalled client only stalls its own
coroutine.

That loop is the process's one gRPC loop: it is started once and never closed. grpc.aio
keeps one completion queue for the process, and the events of a server that has stopped
can still arrive after its stop. On a loop closed under them grpc raised "Event loop is
closed" from its poller; a test run that started and stopped servers dozens of times in
one process, each on a loop of its own, died of a segfault.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1.health import aio as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..config import Config
from ..errors import Xtcp2Error
from ..gen.xtcp_config.v1 import xtcp_config_pb2
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2
from .config_service import ConfigService
from .config_service import add_to_server as add_config_service
from .grpc_auth import AuthInterceptor, Authorizer, is_unix, prepare_unix_listener
from .grpc_tls import server_credentials
from .flat_record_service import DEFAULT_MAX_CLIENTS, SERVICE as RECORD_SERVICE, FlatRecordService
from .record_fanout import DEFAULT_QUEUE_ROWS, FanOut, Subscriber

log = logging.getLogger(__name__)

CONFIG_SERVICE = xtcp_config_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name
_ = xtcp_flat_record_pb2  # registers the record service descriptor for reflection


def listen_address(host: str, port: int) -> str:
    if is_unix(host):
        return host
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass
class GrpcServer:
    """Handle of a running server: `port` is the bound port (useful with grpc_port 0)."""

    address: str
    port: int
    fanout: FanOut
    config_service: ConfigService
    _loop: asyncio.AbstractEventLoop
    _server: grpc.aio.Server
    _records: FlatRecordService
    _daemon: object
    _executor: ThreadPoolExecutor
    _health: object = None
    _auth: Authorizer | None = None
    _stopped: bool = field(default=False)

    def subscribers(self) -> list[Subscriber]:
        return self.fanout.subscribers()

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving; stream clients get their stream ended. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._daemon.remove_listener(self.fanout.publish)
        except Exception as e:
            log.debug("remove_listener: %s", e)
        self.config_service.bursts.stop()

        async def shutdown() -> None:
            if self._health is not None:
                await self._health.enter_graceful_shutdown()  # watchers see NOT_SERVING first
            self._records.stopping.set()
            self.fanout.close_all()
            await self._server.stop(grace)
            # cancelled streams can leave their handlers behind: end this server's own
            # (the loop is shared with any other server of the process)
            rest = [t for t in self._records.tasks if not t.done()]
            for t in rest:
                t.cancel()
            if rest:
                await asyncio.wait(rest, timeout=2)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=grace + 5)
        except Exception as e:
            log.warning("gRPC server shutdown: %s", e)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._auth is not None:
            self._auth.close()


_loop_lock = threading.Lock()
_shared_loop: asyncio.AbstractEventLoop | None = None


def grpc_loop() -> asyncio.AbstractEventLoop:
    """The process's gRPC event loop, running on its own thread from the first call on."""
    global _shared_loop
    with _loop_lock:
        if _shared_loop is None:
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.run_forever()

            threading.Thread(target=run, name="xtcp2-grpc", daemon=True).start()
            asyncio.run_coroutine_threadsafe(_hold_grpc_aio(), loop).result()
            _shared_loop = loop
        return _shared_loop


async def _hold_grpc_aio() -> None:
    """One reference to grpc.aio's process state, never given back. Each aio server
    takes one and gives it back when it is collected, on whatever thread collects it;
    the last one back shut the completion queue and its poller thread down, and the
    next server started them again: a teardown and a restart per test where a process
    starts many servers. Held, the queue and its poller live as long as the process,
    as they do in a daemon that starts one server."""
    from grpc._cython import cygrpc  # where grpc.aio's servers and channels take it

    init = getattr(cygrpc, "init_grpc_aio", None)
    if init is not None:
        init()


def start_grpc_server(daemon, config: Config, *, queue_rows: int = DEFAULT_QUEUE_ROWS,
                      max_clients: int = DEFAULT_MAX_CLIENTS, poll_grace: float | None = None) -> GrpcServer:
    """Bind config.grpc_listen:config.grpc_port and serve until .stop().

    Raises Xtcp2Error with a one-line reason when the address cannot be bound.
    `queue_rows` bounds each stream client's queue (records); `max_clients` bounds the
    number of concurrent stream clients (further ones get RESOURCE_EXHAUSTED).
    """
    address = listen_address(config.grpc_listen, config.grpc_port)
    auth = Authorizer(config)  # Xtcp2Error: bad token file, unknown user, open listener without a token
    tls = server_credentials(config)  # None: plain; Xtcp2Error: half a TLS setup, unreadable files
    if auth.kind == "unix":
        prepare_unix_listener(address[len("unix:"):])
    loop = grpc_loop()

    async def build() -> GrpcServer:
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
            ("grpc.max_concurrent_streams", max_clients + 16),
        ], interceptors=[AuthInterceptor(auth)])
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="xtcp2-grpc-call")
        fanout = FanOut(loop, queue_rows)
        config_service = ConfigService(daemon, executor)
        records = FlatRecordService(daemon, fanout, max_clients, poll_grace)
        add_config_service(config_service, server)  # garbage requests: INVALID_ARGUMENT, no traceback
        server.add_generic_rpc_handlers((records.handler(),))
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        for name in ("", CONFIG_SERVICE, RECORD_SERVICE):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (CONFIG_SERVICE, RECORD_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        try:
            try:
                port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
            except RuntimeError as e:
                raise Xtcp2Error(f"gRPC: cannot listen on {address}: {e}") from None
            if not port:
                raise Xtcp2Error(f"gRPC: cannot listen on {address} (address in use or not local)")
            auth.bound(port)
            if auth.kind == "unix":
                os.chmod(address[len("unix:"):], 0o600)
            await server.start()
        except BaseException:
            # stopped here, on its loop, not torn down later by whichever thread collects it
            await server.stop(None)
            executor.shutdown(wait=False)
            raise
        return GrpcServer(address=address, port=port, fanout=fanout, config_service=config_service, _loop=loop,
                          _server=server, _records=records, _daemon=daemon, _executor=executor, _health=health,
                          _auth=auth)

    try:
        handle = asyncio.run_coroutine_threadsafe(build(), loop).result()
    except Xtcp2Error:
        raise
    except Exception as e:
        raise Xtcp2Error(f"gRPC: could not start on {address}: {e}") from None
    daemon.add_listener(handle.fanout.publish)
    log.info("gRPC API listening on %s (%s)", listen_address(config.grpc_listen, handle.port), auth.describe())
    return handle
