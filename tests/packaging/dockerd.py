"""A private dockerd for the image test: its own data-root, exec-root and socket under
/tmp, no iptables, no bridge, so it never meets another dockerd on the machine.
(tests/identity has a richer one on its branch; this one only builds and runs images.)"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest


def unavailable(why: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"needed under CI=true: {why}")
    pytest.skip(why)


class Dockerd:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="xtcp2-ops-dockerd-", dir="/tmp")
        self.sock = os.path.join(self.root, "docker.sock")
        self.log_path = os.path.join(self.root, "dockerd.log")
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        return dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")

    def start(self, timeout: float = 90) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                 "--data-root", os.path.join(self.root, "data"), "--exec-root", os.path.join(self.root, "exec"),
                 "-H", f"unix://{self.sock}", "--pidfile", os.path.join(self.root, "docker.pid")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if self._ping():
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {timeout}s: {self.log_tail()}")

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.sock)
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in s.recv(256)
        except OSError:
            return False

    def docker(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        """stdout; with check=False a failure returns stderr instead."""
        r = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            if check:
                raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
            return r.stderr.strip()
        return r.stdout.strip()

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            try:
                for cid in self.docker("ps", "-aq", check=False, timeout=30).split():
                    self.docker("rm", "-f", cid, check=False, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        # dockerd leaves mounts below its roots (netns/default, the data-root bind): deepest first
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for path in sorted((m for m in mounts if m.startswith(self.root + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd():
    if os.geteuid() != 0:
        unavailable("dockerd needs root")
    for tool in ("dockerd", "docker", "mmdebstrap"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (scripts/apt-test.txt)")
    d = Dockerd()
    try:
        d.start()
        yield d
    finally:
        d.stop()
