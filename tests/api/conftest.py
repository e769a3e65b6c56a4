"""Fixtures for the control-plane tests: a real Daemon polling a real namespace full of
TCP sockets, the gRPC server in front of it, and an upstream-built client process."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from xtcp2.config import Config

from ..holder import netns_holding
from . import upstream_proto

HERE = pathlib.Path(__file__).resolve().parent
RUNNER = HERE / "upstream_runner.py"



@pytest.fixture(scope="session")
def upstream_gen(tmp_path_factory) -> pathlib.Path:
    return upstream_proto.generate(tmp_path_factory.mktemp("upstream_client"))


@pytest.fixture(scope="session")
def run_upstream(upstream_gen):
    """run_upstream(target, ops, timeout=60) -> results list, from a separate upstream-client process."""

    def run(target: str, ops: list, timeout: float = 60) -> list:
        proc = subprocess.run([sys.executable, str(RUNNER), str(upstream_gen), target],
                              input=json.dumps(ops), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"upstream client failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return json.loads(proc.stdout)

    return run


@pytest.fixture(scope="module")
def socket_netns():
    """A fresh network namespace holding 50 established loopback connections + 1 listener."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with netns_holding("xtcp2api", 50) as name:
        yield {"name": name, "sockets": 101}


class RunningDaemon:
    def __init__(self, config: Config, **server_kw) -> None:
        from xtcp2.api.grpc_server import start_grpc_server
        from xtcp2.daemon import Daemon

        self.daemon = Daemon(config)
        try:
            self.server = start_grpc_server(self.daemon, config, **server_kw)
        except BaseException:
            self.daemon.close()
            raise
        self.target = f"127.0.0.1:{self.server.port}"
        self.thread = threading.Thread(target=self.daemon.run, name="test-daemon", daemon=True)
        self.thread.start()

    def wait_loops(self, n: int, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.daemon.loops < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.daemon.loops

    def close(self) -> None:
        self.server.stop()
        self.daemon.stop()
        self.thread.join(timeout=10)
        self.daemon.close()


@pytest.fixture
def start_daemon(socket_netns):
    """start_daemon(**config_changes) -> RunningDaemon polling the socket namespace."""
    running: list[RunningDaemon] = []

    def start(server_kw: dict | None = None, **changes) -> RunningDaemon:
        base = dict(netns=[socket_netns["name"]], grpc_port=0, dest="null", poll_frequency=60.0,
                    poll_timeout=0.5, reconcile_before_poll=False)
        base.update(changes)
        rd = RunningDaemon(Config(**base).validate(), **(server_kw or {}))
        running.append(rd)
        return rd

    yield start
    for rd in running:
        rd.close()


AS_USER = HERE / "as_user.py"
UPSTREAM_MODULES = ("upstream_xtcp_config_pb2", "upstream_xtcp_config_pb2_grpc",
                    "upstream_xtcp_flat_record_pb2", "upstream_xtcp_flat_record_pb2_grpc")


def as_user(uid: int = 65534, gid: int | None = None) -> list[str]:
    """argv prefix that runs a Python client as this uid/gid with no groups, as a local user's.

    The client is loaded as root and then drops privileges for good (tests/api/as_user.py),
    because the interpreter may live where uid 65534 cannot read (pyenv under /root).
    """
    return [sys.executable, str(AS_USER), str(uid), str(uid if gid is None else gid)]


@pytest.fixture(scope="session")
def public_upstream(upstream_gen):
    """The upstream client (runner + generated stubs) copied where uid 65534 can read it."""
    import shutil
    import tempfile
    d = pathlib.Path(tempfile.mkdtemp(prefix="xtcp2-upstream-public-"))  # pytest's own tmp is 0700
    try:
        shutil.copytree(upstream_gen, d / "gen")
        shutil.copy(RUNNER, d / "upstream_runner.py")
        for p in [d, *d.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def run_upstream_as(public_upstream):
    """run_upstream_as(uid, target, ops) -> results, from the upstream client run as `uid`."""
    gen = public_upstream / "gen"
    preload = [a for m in UPSTREAM_MODULES for a in ("--import", m)]

    def run(uid: int, target: str, ops: list, gid: int | None = None, timeout: float = 60) -> list:
        proc = subprocess.run([*as_user(uid, gid), "--path", str(gen), *preload,
                               str(public_upstream / "upstream_runner.py"), str(gen), target],
                              input=json.dumps(ops), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"upstream client as uid {uid} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return json.loads(proc.stdout)

    return run


@pytest.fixture(scope="session")
def xtcp2client_as():
    """xtcp2client_as(uid, port, *argv) -> CompletedProcess of xtcp2client run as `uid`."""

    def run(uid: int, port: int, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user(uid), "-m", "xtcp2.tools.xtcp2client", "-port", str(port), *argv],
                              capture_output=True, text=True, timeout=timeout)

    return run
