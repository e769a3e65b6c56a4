"""Real docker containers for the self-test's NS_DOCKER and the tcp-stress microVM flavor.

There is no registry on a test host or in the microVM: the image is `docker import`ed
from a rootfs holding one static busybox (Debian's busybox-static). That is all the
containers need: busybox sh and nc give the self-test's containers their sockets, and
chroot lets the tcp-stress containers run this host's own tcp_server / tcp_client
over a read-only bind mount of / (what upstream's tcp-stress image ships, without
building one). Everything goes through the docker CLI against one API socket.

PrivateDockerd starts a dockerd of our own (own data/exec roots and socket, vfs
storage, no bridge, no iptables), for the microVM guest where none runs.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

DEFAULT_SOCKET = "/run/docker.sock"   # upstream's -dockerSocket default
IMAGE = "xtcp2-selftest/busybox:1"
APPLETS = ("sh", "nc", "cat", "sleep", "grep", "chroot")
PT_INTERP = 3
TCP_LISTEN = 0x0A
TCP_ESTABLISHED = 0x01


class DockerError(Exception):
    """A one-line reason a docker step failed."""


def api_ping(sock: str, timeout: float = 3.0) -> bool:
    """The Engine API on `sock` answers GET /_ping."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(sock)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(256)
    except OSError:
        return False


def is_static(path: str) -> bool:
    """An ELF executable without a program interpreter (runs in an empty root)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:   # 64-bit only
                return False
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except (OSError, struct.error, IndexError):
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != PT_INTERP for i in range(phnum))


def static_busybox() -> str | None:
    for cand in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if cand and is_static(cand):
            return cand
    return None


def unusable(sock: str) -> str:
    """Why real containers cannot be used through `sock` ("" when they can be tried)."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    if not os.path.exists(sock):
        return f"no dockerd at {sock}"
    if not api_ping(sock):
        return f"dockerd at {sock} does not answer"
    if static_busybox() is None:
        return "no static busybox for the image (Debian busybox-static)"
    return ""


class Docker:
    """The docker CLI against one API socket."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        # the CLI keeps its config under $HOME; a read-only home (the microVM) is fine with a scratch one
        self._config = tempfile.mkdtemp(prefix="xtcp2-docker-cli-")
        self.env["DOCKER_CONFIG"] = self._config

    def __call__(self, *args: str, timeout: float = 180) -> str:
        try:
            r = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DockerError(f"docker {args[0]}: no answer within {timeout:g} s") from None
        except FileNotFoundError:
            raise DockerError("no docker CLI") from None
        if r.returncode != 0:
            lines = [x for x in r.stderr.strip().splitlines() if x.strip()] or ["(no output)"]
            raise DockerError(f"docker {args[0]}: {lines[-1][:300]}")
        return r.stdout.strip()

    def close(self) -> None:
        shutil.rmtree(self._config, ignore_errors=True)

    def has_image(self, name: str) -> bool:
        try:
            self("image", "inspect", "--format", "{{.Id}}", name, timeout=60)
            return True
        except DockerError:
            return False

    def ensure_image(self, name: str = IMAGE) -> bool:
        """Import the busybox image unless present; True when it was imported now."""
        if self.has_image(name):
            return False
        busybox = static_busybox()
        if busybox is None:
            raise DockerError("no static busybox for the image (Debian busybox-static)")
        with tempfile.TemporaryDirectory(prefix="xtcp2-image-") as tmp:
            root = os.path.join(tmp, "rootfs")
            os.makedirs(os.path.join(root, "bin"))
            for d in ("proc", "sys", "dev", "etc", "tmp", "host"):
                os.makedirs(os.path.join(root, d))
            shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
            for applet in APPLETS:
                os.symlink("busybox", os.path.join(root, "bin", applet))
            tar = os.path.join(tmp, "rootfs.tar")
            subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True, capture_output=True)
            self("import", tar, name, timeout=300)
        return True

    def remove(self, *ids: str) -> None:
        """Remove containers (best effort: cleanup must not hide the real failure)."""
        if ids:
            try:
                self("rm", "-f", *ids, timeout=180)
            except DockerError:
                pass

    def pid(self, cid: str) -> int:
        return int(self("inspect", "--format", "{{.State.Pid}}", cid, timeout=60))


def tcp_sockets(pid: int) -> list[tuple[int, int, int, int]]:
    """(local port, remote port, state, inode) of the TCP sockets (v4 and v6) in pid's namespace."""
    out = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    lport = int(parts[1].rsplit(":", 1)[1], 16)
                    rport = int(parts[2].rsplit(":", 1)[1], 16)
                    out.append((lport, rport, int(parts[3], 16), int(parts[9])))
        except (OSError, ValueError):
            pass
    return out


class PrivateDockerd:
    """dockerd with its own roots and API socket: never meets another dockerd."""

    def __init__(self, root: str, data_root: str | None = None) -> None:
        self.root = root
        self.sock = os.path.join(root, "docker.sock")
        self.data_root = data_root or os.path.join(root, "data")
        self.log_path = os.path.join(root, "dockerd.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        if shutil.which("dockerd") is None:
            raise DockerError("dockerd is not installed")
        os.makedirs(self.root, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
                 "--data-root", self.data_root, "--exec-root", os.path.join(self.root, "exec"),
                 "--pidfile", os.path.join(self.root, "docker.pid"), "-H", f"unix://{self.sock}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if api_ping(self.sock):
                return
            time.sleep(0.5)
        self.stop()
        raise DockerError(f"dockerd did not answer within {timeout:g} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read()[-4000:].decode(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errors = [x for x in lines if "level=error" in x or "level=fatal" in x]
        return ((errors or lines or ["(empty log)"])[-1])[:400]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def stress_script(bindir: str, sockets: int, first_port: int = 4000) -> str:
    """Shell for one tcp-stress container (upstream's TCP_MODE=both): tcp_server with
    `sockets` listeners, then, once the last one listens, tcp_client with as many
    connections; both are this host's tools, run through chroot over / mounted at /host."""
    last = first_port + sockets - 1
    listening = f":{last:04X} 00000000:0000 0A"   # /proc/net/tcp: 127.0.0.1:last, LISTEN
    return (f"chroot /host {bindir}/tcp_server -count {sockets} -port {first_port} -quiet & "
            f"until grep -q '{listening}' /proc/net/tcp; do sleep 0.5; done; "
            f"exec chroot /host {bindir}/tcp_client -count {sockets} -port {first_port} -sleep 5s -pads 1024 -quiet")


def run_stress_container(docker: Docker, name: str, bindir: str, sockets: int, env: dict[str, str]) -> str:
    """Start one tcp-stress container in its own namespace (--network none); its id."""
    flags = [f"--env={k}={v}" for k, v in sorted(env.items())]
    return docker("run", "-d", "--name", name, "--network", "none", "--volume", "/:/host:ro", *flags,
                  IMAGE, "sh", "-c", stress_script(bindir, sockets))
