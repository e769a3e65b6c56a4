"""A real dockerd of our own (Debian docker.io) for the tests that need containers.

It gets its own --data-root, --exec-root and API socket under a temporary directory
(short: a unix socket path must fit in 108 bytes), no iptables and no bridge, so it
never meets another dockerd on the machine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from xtcp2.tools.dockerload import api_ping

from . import run_cli, tail_text


def unavailable(why: str):
    """Skip, except under CI=true, where a missing dockerd fails the tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"dockerd needed under CI=true: {why}")
    pytest.skip(why)


class Dockerd:
    def __init__(self, prefix: str, live_restore: bool = False) -> None:
        self.root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        self.sock = os.path.join(self.root, "docker.sock")
        self.pidfile = os.path.join(self.root, "docker.pid")
        self.log_path = os.path.join(self.root, "dockerd.log")
        self.live_restore = live_restore  # containers keep running while dockerd is stopped
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        return dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")

    def start(self, timeout: float = 90) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                 *(["--live-restore"] if self.live_restore else []),
                 "--data-root", os.path.join(self.root, "data"), "--exec-root", os.path.join(self.root, "exec"),
                 "-H", f"unix://{self.sock}", "--pidfile", self.pidfile],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {timeout}s: {self.log_tail()}")

    def ping(self) -> bool:
        return api_ping(self.sock, timeout=2)

    def docker(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        """stdout; with check=False a failure returns stderr instead."""
        return run_cli(["docker", *args], check, timeout, env=self.env)

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name))[0]

    def log_tail(self) -> str:
        return tail_text(self.log_path)

    def stop(self) -> None:
        """Stop the daemon only (with live_restore its containers keep running)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def destroy(self) -> None:
        """Remove every container, stop the daemon and leave nothing of it behind."""
        if self.proc is None and not self.ping():
            try:
                self.start()  # a test may have stopped it: containers are removed through it
            except RuntimeError:
                pass
        if self.ping():
            ids = self.docker("ps", "-aq", check=False, timeout=30).split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
        self.stop()
        # dockerd leaves mounts below its roots (netns/default, the data-root bind): deepest first
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for path in sorted((m for m in mounts if m.startswith(self.root + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def start_dockerd(prefix: str, live_restore: bool = False, tools: tuple[str, ...] = ()) -> Dockerd:
    """A running Dockerd, or skip/fail (under CI=true) saying what is missing."""
    if os.geteuid() != 0:
        unavailable("dockerd needs root")
    for tool in ("dockerd", "docker", *tools):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (scripts/apt-test.txt)")
    d = Dockerd(prefix, live_restore)
    try:
        d.start()
    except RuntimeError as e:
        d.destroy()
        unavailable(str(e))
    return d
