"""A real `xtcp2` daemon process for tests: started with flags, scraped over HTTP,
measured through /proc, signalled, and always killed at the end."""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`: its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


class DaemonProcess:
    def __init__(self, *flags: str) -> None:
        self.metrics_port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="xtcp2-secrel-daemon-", suffix=".log", delete=False)
        argv = [sys.executable, "-m", "xtcp2", "-grpcPort", str(free_port()),
                "-promListen", f"127.0.0.1:{self.metrics_port}", *flags]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def scrape(self, timeout: float = 5.0) -> dict[tuple[str, tuple], float]:
        """{(sample name, sorted label items): value} of one scrape."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=timeout).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body) for s in fam.samples}

    def value(self, name: str, **labels) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_metric(self, name: str, at_least: float, timeout: float = 30.0, **labels) -> float:
        deadline = time.monotonic() + timeout
        v = 0.0
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.log_text()[-2000:]}"
            try:
                v = self.value(name, **labels)
                if v >= at_least:
                    return v
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {v} < {at_least} after {timeout}s; log: {self.log_text()[-2000:]}")

    def status(self) -> dict[str, int]:
        """Threads and VmRSS (kB) from /proc/PID/status."""
        out = {}
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("Threads", "VmRSS"):
                out[key] = int(val.split()[0])
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took to exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def log_text(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)
