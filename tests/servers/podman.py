"""A real podman (Debian `podman` 4.3) of our own, serving its Docker-compatible API.

Rootful, with private storage (--root/--runroot under a temporary directory, vfs) so it
never meets another podman or dockerd; the cgroupfs manager (no systemd here) and file
events. `podman system service --time=0 unix://SOCK` serves the API; the CLI, given the
same storage flags, creates the containers the API then reports.

Containers get explicit ulimits: podman's default (nofile 1048576) is above the hard
limit of this sandbox, and runc then fails with "error setting rlimit type 7".
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from . import run_cli, tail_text
from .dockerd import unavailable

ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")


class Podman:
    def __init__(self, prefix: str) -> None:
        self.root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        self.sock = os.path.join(self.root, "podman.sock")
        self.log_path = os.path.join(self.root, "service.log")
        self.base = ["podman", "--root", os.path.join(self.root, "storage"), "--runroot",
                     os.path.join(self.root, "run"), "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--storage-driver", "vfs", "--tmpdir", os.path.join(self.root, "tmp")]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        from xtcp2.tools.dockerload import api_ping
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.base, "system", "service", "--time=0", f"unix://{self.sock}"],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podman system service exited {self.proc.returncode}: {self.log_tail()}")
            if api_ping(self.sock):
                return
            time.sleep(0.2)
        raise RuntimeError(f"podman API did not answer within {timeout}s: {self.log_tail()}")

    def podman(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        """stdout; with check=False a failure returns stderr instead."""
        return run_cli([*self.base, *args], check, timeout)

    def log_tail(self) -> str:
        return tail_text(self.log_path)

    def destroy(self) -> None:
        """Remove every container, stop the service and leave nothing of it behind."""
        try:
            # one at a time, a few passes: podman 4.3 refuses to remove a container another
            # joined (--network container:X) before that one, even with --all
            for _ in range(3):
                ids = self.podman("ps", "-aq", check=False, timeout=60).split()
                if not ids or not all(len(i) >= 12 for i in ids):
                    break
                for cid in ids:
                    self.podman("rm", "--force", "--time", "0", cid, check=False, timeout=120)
        except subprocess.TimeoutExpired:
            pass
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None
        # conmon runs `podman ... container cleanup` after a container dies, which writes
        # below our root again: wait for everything that names it to end
        deadline = time.monotonic() + 20
        while self._helpers() and time.monotonic() < deadline:
            time.sleep(0.2)
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for path in sorted((m for m in mounts if m.startswith(self.root + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


    def _helpers(self) -> list[int]:
        """Processes (conmon, podman cleanup) whose command line names our root."""
        me = self.root.encode()
        out = []
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if me in f.read():
                        out.append(pid)
            except OSError:
                continue
        return out


def start_podman(prefix: str) -> Podman:
    """A running Podman API, or skip/fail (under CI=true) saying what is missing."""
    if os.geteuid() != 0:
        unavailable("rootful podman needs root")
    if shutil.which("podman") is None:
        unavailable("podman is not installed (scripts/apt-test.txt)")
    p = Podman(prefix)
    try:
        p.start()
    except RuntimeError as e:
        p.destroy()
        unavailable(str(e))
    return p
