"""Shared fixtures for the tool tests: run a tool as a subprocess, a throwaway namespace."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from ..daemon_process import end

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def tool(module: str, *args: str, timeout: float = 60, netns: str | None = None) -> subprocess.CompletedProcess:
    """Run xtcp2.tools.<module> with args, optionally inside a named namespace via `ip netns exec`."""
    cmd = [sys.executable, "-m", f"xtcp2.tools.{module}", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def start_tool(module: str, *args: str, netns: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"xtcp2.tools.{module}", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def netns_name():
    """A fresh named namespace with lo up; deleted afterwards even if the test fails."""
    name = f"xt-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonUnderTest:
    """The real xtcp2 daemon on free loopback ports, polling every second; always stopped."""

    def __init__(self, tmp_path, *extra: str) -> None:
        import shutil
        import time
        exe = shutil.which("xtcp2", path=os.path.dirname(sys.executable)) or shutil.which("xtcp2")
        self.metrics_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.log_path = tmp_path / "xtcp2.log"
        self.log = open(self.log_path, "w")
        cmd = [exe] if exe else [sys.executable, "-m", "xtcp2"]
        self.proc = subprocess.Popen(cmd + ["-frequency", "1s", "-timeout", "1s", "-dest", "null",
                                            "-promListen", f"127.0.0.1:{self.metrics_port}",
                                            "-grpcPort", str(self.grpc_port), *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        from xtcp2.tools.selftest import CheckFailed, fetch_metrics
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()
            try:
                if fetch_metrics(self.url).get("xtcp2_polls_total", 0) >= 1:
                    return
            except CheckFailed:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError("daemon never completed a poll:\n" + self.log_text())

    def metrics(self) -> dict:
        from xtcp2.tools.selftest import fetch_metrics
        return fetch_metrics(self.url)

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        end(self.proc, 20)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def daemon(tmp_path):
    d = DaemonUnderTest(tmp_path)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def polling_daemon(tmp_path):
    """The daemon forced into poll mode (the default may pick bpf events where they load)."""
    d = DaemonUnderTest(tmp_path, "--mode", "poll")
    try:
        yield d
    finally:
        d.stop()


