"""-logLevel, -logFormat json, and the WARNING with counts when the kernel loses events."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from .daemon import ROOT, HealthDaemon

pytestmark = pytest.mark.root

def _once(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xtcp2", "--once", "--netns", "self", "-dest", "null", *flags],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)

def test_json_logs_are_one_object_per_line():
    out = _once("-logFormat", "json", "-logLevel", "info")
    assert out.returncode == 0, out.stderr
    logs = [ln for ln in out.stderr.splitlines() if not ln.startswith("xtcp2: ")]  # the --once summary
    assert logs, out.stderr
    objs = [json.loads(ln) for ln in logs]
    assert all({"ts", "level", "logger", "msg"} <= set(o) for o in objs)
    assert all(o["ts"].endswith("Z") for o in objs)
    assert "info" in {o["level"] for o in objs}

def test_log_level_warning_hides_info():
    quiet = _once("-logLevel", "warning", "-d", "1000")   # -logLevel wins over -d
    loud = _once("-logLevel", "info")
    assert quiet.returncode == loud.returncode == 0
    assert " INFO " not in quiet.stderr
    assert " INFO " in loud.stderr

def test_bad_log_flags_are_one_line():
    for flags in (("-logLevel", "chatty"), ("-logFormat", "xml")):
        out = _once(*flags)
        assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr

def test_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "xtcp2", "-help"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "xtcp2 decode" in out.stdout and "xtcp2 top" in out.stdout
    assert "-logFormat" in out.stdout and "-healthcheck" in out.stdout and "XTCP_CONFIG_JSON" in out.stdout

def test_ring_buffer_losses_are_logged_with_counts(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("bpf mode needs root")
    # --netns self: each resync after a loss re-reads one namespace, not every one on the host
    d = HealthDaemon(tmp_path, "--mode", "bpf", "--netns", "self", "-bpfRingbufBytes", "4096", "-frequency", "5s",
                     "-dest", "null", "-logFormat", "json", env={"XTCP2_LOSS_LOG_INTERVAL": "0.5"})
    try:
        d.wait_for("/readyz", 200, timeout=60)
        # a 4 KiB ring holds about 11 events: a burst of connections overflows it for real
        with socket.socket() as lst:
            lst.bind(("127.0.0.1", 0))
            lst.listen(4096)
            for _ in range(1500):
                c = socket.create_connection(lst.getsockname())
                s, _ = lst.accept()
                c.close()
                s.close()
        deadline = time.monotonic() + 20
        warning = None
        while warning is None and time.monotonic() < deadline:
            for ln in d.log().splitlines():
                o = json.loads(ln)
                if o["level"] == "warning" and "ring-buffer events lost" in o["msg"]:
                    warning = o
            time.sleep(0.2)
        assert warning is not None, d.log()[-3000:]
        assert warning["logger"] == "xtcp2.loss"
        lost = int(warning["msg"].split("): ", 1)[1].split()[0])
        assert lost > 0
        scraped = d.get("/metrics")[1]
        total = next(float(ln.split()[-1]) for ln in scraped.splitlines()
                     if ln.startswith("xtcp2_bpf_ringbuf_drops_total "))
        assert total >= lost
        assert d.stop() == 0
    finally:
        d.close()
