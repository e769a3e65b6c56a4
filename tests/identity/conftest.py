"""A real dockerd of our own (Debian docker.io), and a busybox image built without a registry.

dockerd gets its own --data-root, --exec-root and API socket under a temporary
directory, so it never meets another dockerd on the machine, and --live-restore so that
its containers keep running while the tests stop it. Under CI=true a dockerd that cannot
start fails the tests instead of skipping them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

IMAGE = "xtcp2-identity/busybox:1"
BUSYBOX_APPLETS = ("sh", "nc", "sleep", "cat")


def _unavailable(why: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"dockerd needed under CI=true: {why}")
    pytest.skip(why)


class Dockerd:
    def __init__(self, root: str) -> None:
        self.root = root
        self.sock = os.path.join(root, "docker.sock")
        self.pidfile = os.path.join(root, "docker.pid")
        self.log_path = os.path.join(root, "dockerd.log")
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        return dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")

    def start(self, timeout: float = 90) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "--live-restore",
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
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.sock)
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in s.recv(256)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        r = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip()

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name))[0]


def _build_image(d: Dockerd) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        _unavailable("busybox-static is not installed (scripts/apt-test.txt)")
    rootfs = os.path.join(d.root, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    tar = os.path.join(d.root, "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
    d.docker("import", tar, IMAGE)


@pytest.fixture(scope="session")
def dockerd():
    if os.geteuid() != 0:
        _unavailable("dockerd needs root")
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        _unavailable("docker.io is not installed (scripts/apt-test.txt)")
    # short path: a unix socket path must fit in 108 bytes
    root = tempfile.mkdtemp(prefix="xtcp2-identity-", dir="/tmp")
    d = Dockerd(root)
    try:
        d.start()
    except RuntimeError as e:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(str(e))
    try:
        _build_image(d)
        yield d
    finally:
        if d.proc is None and not d.ping():
            try:
                d.start()
            except RuntimeError:
                pass
        if d.ping():
            ids = d.docker("ps", "-aq", check=False).split()
            if ids:
                d.docker("rm", "-f", *ids, check=False)
        d.stop()
        subprocess.run(["umount", "-R", os.path.join(root, "data")], capture_output=True)
        subprocess.run(["umount", "-R", os.path.join(root, "exec")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
