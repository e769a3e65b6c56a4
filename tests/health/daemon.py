"""A real `xtcp2` daemon process with health endpoints, for the health tests."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.daemon_process import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


class HealthDaemon:
    def __init__(self, tmp: pathlib.Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.stall = tmp / "stall"
        self.logfile = tmp / "daemon.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "XTCP2_TEST_STALL_FILE": str(self.stall), **(env or {})}
        argv = [sys.executable, "-m", "xtcp2", "-promListen", self.listen, "-grpcPort", str(free_port()), *flags]
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=tmp, env=full_env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.listen}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_for(self, path: str, status: int, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        got = (0, "")
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.log()[-2000:]}"
            try:
                got = self.get(path)
                if got[0] == status:
                    return got[1]
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{path}: wanted {status}, last {got} after {timeout}s; log: {self.log()[-2000:]}")

    def healthcheck(self, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "xtcp2", "-healthcheck"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "PROM_LISTEN": self.listen, **(env or {})},
                              timeout=30)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self) -> int:
        self.stall.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def close(self) -> None:
        self.stall.unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
