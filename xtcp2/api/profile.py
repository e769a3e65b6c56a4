"""GET /debug/profile?seconds=N: a CPU profile of the running daemon, taken by py-spy.

Why py-spy and not yappi: py-spy samples from a separate process (process_vm_readv of
our memory, `--nonblocking`: the daemon is never stopped), so it costs nothing until
someone asks, sees every thread (netlinkers, the gRPC loop, the listener) without having
been started before them, and does not slow the interpreter while it runs. yappi is a
tracing profiler: it hooks every function call of every thread while on (the collector
runs measurably slower), and threads started before it are only partly seen.

Rules: loopback peers only (checked by the listener, whatever -promListen binds),
1 <= N <= 60, one profile at a time (another request gets 429), run on its own
thread so the listener keeps serving, and the py-spy process is killed if the daemon
stops. Output: `format=flamegraph` (SVG, the default), `raw` (collapsed stacks, for
flamegraph.pl / speedscope / Pyroscope) or `speedscope` (JSON); `idle=1` includes
threads that wait (by default only stacks on CPU are counted).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sysconfig
import threading
from urllib.parse import parse_qs

from prometheus_client import Counter

log = logging.getLogger(__name__)

MAX_SECONDS = 60
DEFAULT_SECONDS = 10
RATE_HZ = 100
MAX_OUTPUT = 64 << 20
FORMATS = {"flamegraph": "image/svg+xml", "raw": "text/plain; charset=utf-8", "speedscope": "application/json"}

PROFILES = Counter("xtcp2_profiles_total", "/debug/profile requests by result", ["result"])
for _r in ("ok", "busy", "refused", "bad_request", "unavailable", "error"):
    PROFILES.labels(_r)


class ProfileError(Exception):
    def __init__(self, status: str, message: str, result: str) -> None:
        super().__init__(message)
        self.status = status
        self.result = result


def py_spy() -> str | None:
    """py-spy next to this interpreter's scripts (a venv or the wheel's install), else on PATH."""
    here = os.path.join(sysconfig.get_path("scripts"), "py-spy")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("py-spy")


def parse_query(query: str) -> tuple[int, str, bool]:
    """(seconds, format, idle) from the query string; ProfileError 400 if malformed."""
    try:
        q = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8)
    except ValueError:
        raise ProfileError("400 Bad Request", "malformed query", "bad_request") from None
    unknown = set(q) - {"seconds", "format", "idle"}
    if unknown:
        raise ProfileError("400 Bad Request", f"unknown parameter {sorted(unknown)[0]!r} (seconds, format, idle)",
                           "bad_request")
    text = q.get("seconds", [str(DEFAULT_SECONDS)])[-1]
    if not text.isdigit() or not 1 <= int(text) <= MAX_SECONDS:
        raise ProfileError("400 Bad Request", f"seconds must be a whole number from 1 to {MAX_SECONDS}",
                           "bad_request")
    fmt = q.get("format", ["flamegraph"])[-1]
    if fmt not in FORMATS:
        raise ProfileError("400 Bad Request", f"format must be one of {', '.join(FORMATS)}", "bad_request")
    idle = q.get("idle", ["0"])[-1]
    if idle not in ("0", "1", "true", "false"):
        raise ProfileError("400 Bad Request", "idle must be 0 or 1", "bad_request")
    return int(text), fmt, idle in ("1", "true")


class Profiler:
    """One py-spy run at a time, of this process."""

    def __init__(self) -> None:
        self._busy = threading.Lock()
        self._lock = threading.Lock()   # _proc and _stopping, between run() and stop()
        self._proc: subprocess.Popen | None = None
        self._stopping = False

    def claim(self) -> bool:
        """Reserve the profiler for one request (the listener thread); False if taken."""
        return self._busy.acquire(blocking=False)

    def release(self) -> None:
        """Give back a claim whose run() will not happen."""
        self._busy.release()

    def run(self, seconds: int, fmt: str, idle: bool) -> tuple[bytes, str]:
        """(profile, content type); call after claim(), from a worker thread. Releases the claim."""
        try:
            return self._run(seconds, fmt, idle)
        finally:
            self._busy.release()

    def _run(self, seconds: int, fmt: str, idle: bool) -> tuple[bytes, str]:
        exe = py_spy()
        if exe is None:
            raise ProfileError("501 Not Implemented", "py-spy is not installed (pip install 'xtcp2[profile]')",
                               "unavailable")
        # py-spy writes a file: give it an anonymous one, nothing on disk to clean or to race for
        out = os.memfd_create("xtcp2-profile", os.MFD_CLOEXEC)
        try:
            argv = [exe, "record", "--pid", str(os.getpid()), "--duration", str(seconds), "--rate", str(RATE_HZ),
                    "--format", fmt, "--output", f"/proc/self/fd/{out}", "--nonblocking"]
            if idle:
                argv.append("--idle")
            with self._lock:
                if self._stopping:
                    raise ProfileError("503 Service Unavailable", "the daemon is stopping", "error")
                proc = self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.PIPE, pass_fds=(out,),
                                                     env={"PATH": os.defpath})
            try:
                _, err = proc.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                raise ProfileError("500 Internal Server Error", "py-spy did not finish", "error") from None
            finally:
                with self._lock:
                    self._proc = None
            rc = proc.returncode
            if rc != 0:
                last = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()][-1:] or [f"exit {rc}"]
                log.warning("profile: py-spy failed: %s", last[0])
                raise ProfileError("500 Internal Server Error", f"py-spy failed: {last[0]}", "error")
            size = os.fstat(out).st_size
            if size > MAX_OUTPUT:
                raise ProfileError("500 Internal Server Error", f"profile larger than {MAX_OUTPUT} bytes", "error")
            return os.pread(out, size, 0), FORMATS[fmt]
        finally:
            os.close(out)

    def stop(self) -> None:
        """The daemon is stopping: end a profile in progress now (and refuse new ones)."""
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
