"""-pyroscopeUrl: the agent (pyroscope-io) is imported only when asked for, its absence is
a one-line error, and a daemon with it pushes profiles to the URL.

No Pyroscope server installs here (not on PyPI, npm or Debian), so the push is checked
against a small HTTP receiver in this test that records what the agent POSTs: the
request the real agent makes, not whether a real server accepts it.
"""
from __future__ import annotations

import gzip
import http.server
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.daemon_process import ROOT, DaemonProcess, free_port
from tests.need import module

pytestmark = pytest.mark.root
ONCE = ["--once", "--mode", "poll", "--netns", "self", "-dest", "null"]


def run_cli(prelude: str, argv: list[str]) -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nimport xtcp2.cli as cli\nrc = cli.main({argv!r})\n" \
           "print('pyroscope imported' if 'pyroscope' in sys.modules else 'pyroscope not imported')\nsys.exit(rc)\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_not_imported_unless_asked_for():
    out = run_cli("", ONCE)
    assert out.returncode == 0, out.stderr
    assert "pyroscope not imported" in out.stdout


def test_missing_extra_is_a_one_line_error():
    # pyroscope-io is installed here; `sys.modules[name] = None` is Python's way to make
    # an import of it fail as if it were not
    out = run_cli("sys.modules['pyroscope'] = None", ONCE + ["-pyroscopeUrl", "http://127.0.0.1:9"])
    assert out.returncode == 2
    assert out.stderr.strip() == "xtcp2: -pyroscopeUrl needs the pyroscope-io package: pip install 'xtcp2[pyroscope]'"


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_daemon_pushes_profiles_to_the_url():
    module("pyroscope", "pip install -e '.[test]' (the pyroscope extra)")
    rx = Receiver()
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    d = DaemonProcess("--mode", "poll", "--netns", "self", "-frequency", "500ms", "-dest", "null",
                      "-pyroscopeUrl", f"http://127.0.0.1:{rx.server_port}", "-pyroscopeAppName", "ops-pyro-test",
                      "-pyroscopeUploadSec", "1", "-hostname", "ops-pyro-host")
    try:
        deadline = time.monotonic() + 60
        while len(rx.posts) < 2:
            assert d.proc.poll() is None, d.log_text()[-2000:]
            assert time.monotonic() < deadline, f"no pushes; log: {d.log_text()[-2000:]}"
            time.sleep(0.2)
        path, headers, body = rx.posts[-1]
        assert path == "/push.v1.PusherService/Push" and headers["content-type"] == "application/proto"
        assert b"ops-pyro-test" in body and b"ops-pyro-host" in body   # app name and hostname tag
        assert "pyroscope: pushing CPU profiles of ops-pyro-test" in d.log_text()
        rc, _ = d.stop()
        assert rc == 0
    finally:
        d.close()
        rx.shutdown()


def test_a_server_that_is_down_does_not_stop_collection():
    module("pyroscope", "pip install -e '.[test]' (the pyroscope extra)")
    d = DaemonProcess("--mode", "poll", "--netns", "self", "-frequency", "300ms", "-dest", "null",
                      "-pyroscopeUrl", f"http://127.0.0.1:{free_port()}", "-pyroscopeUploadSec", "1")
    try:
        d.wait_metric("xtcp2_polls_total", 10, timeout=60)
        rc, _ = d.stop()
        assert rc == 0
    finally:
        d.close()
