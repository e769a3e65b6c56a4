"""Non-finite, absurd and hostile values on the command line, and --netns names that
match nothing: a one-line error with exit 2, or a bounded, announced behaviour."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.root


def xtcp2(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xtcp2", "-promListen", "127.0.0.1:0", "-grpcPort", "0", *args],
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["-frequency", "inf"], ["frequency", "finite"]),
    (["-frequency", "nan"], ["frequency", "finite"]),
    (["-frequency", "1e400"], ["frequency", "finite"]),
    (["-frequency", "1ns"], ["poll_frequency", ">= 0.01"]),
    (["-frequency", "200h"], ["frequency", "604800"]),
    (["-timeout", "-1"], ["timeout"]),
    (["-resync", "inf"], ["resync", "finite"]),
    (["-reconcileFrequency", "nan"], ["reconcileFrequency", "finite"]),
    (["-bpfCloseWait", "inf"], ["bpfCloseWait", "finite"]),
    (["-bpfRefresh", "nan"], ["bpfRefresh", "finite"]),
    (["-nltimeout", "99999999999"], ["nl_timeout_milliseconds", "100000"]),
    (["-envelopeFlushRows", "-5"], ["envelope_flush_threshold_rows"]),
    (["-d", "5000"], ["debug_level", "1000"]),
    (["-hostname", "web1\nFAKE"], ["hostname", "control character", "'\\n'"]),
    (["-label", "\x1b[31mred"], ["label", "control character", "'\\x1b'"]),
    (["-location", "a\rb"], ["location", "control character"]),
    (["-tag", "x\x7f"], ["tag", "control character"]),
    (["-dest", "file:/tmp/a\x07b"], ["dest", "control character"]),
    (["--netns", "a\nb"], ["netns", "control character"]),
])
def test_flag_values_refused_on_one_line(args, words):
    r = xtcp2("--once", "-dest", "null", *args) if "-dest" not in args else xtcp2("--once", *args)
    line = one_line_error(r, *words)
    assert "\x1b" not in line and "\r" not in line


@pytest.mark.parametrize("dest", [
    "udp:127.0.0.1:9?flushTimeout=nan", "udp:127.0.0.1:9?flushTimeout=inf", "udp:127.0.0.1:9?flushTimeout=-1",
    "udp:127.0.0.1:9?flushTimeout=1e9", "udp:127.0.0.1:9?backoffMax=nan", "udp:127.0.0.1:9?queue=inf",
    "udp:127.0.0.1:9?queue=1.5", "udp:127.0.0.1:9?queueBytes=nan", "udp:127.0.0.1:9?maxDatagram=nan",
    "unix:/tmp/secvalues.sock?timeout=inf", "nats:127.0.0.1:4222?ackTimeout=nan",
    "s3parquet:/tmp/secvalues-s3?rollSeconds=inf",
])
def test_destination_options_refused_before_anything_runs(dest):
    """flushTimeout=nan used to make --once wait forever on shutdown: refused at start now."""
    t0 = time.monotonic()
    r = xtcp2("--once", "-dest", dest, timeout=30)
    name = dest.split("?")[1].split("=")[0]
    one_line_error(r, f"option {name}=")
    assert time.monotonic() - t0 < 20


def test_once_with_an_unknown_netns_exits_2_naming_it():
    missing = f"secvalues-nosuch-{uuid.uuid4().hex[:6]}"
    r = xtcp2("--once", "-dest", "null", "-d", "10", "--netns", "self", "--netns", missing)
    assert r.returncode == 2, r.stderr
    assert "namespaces=1 " in r.stderr  # the namespaces that exist were still polled
    assert f"\nxtcp2: --netns {missing}: no such network namespace\n" in r.stderr, r.stderr
    assert f"WARNING xtcp2.netns.registry: --netns {missing}: no such network namespace" in r.stderr
    ok = xtcp2("--once", "-dest", "null", "--netns", "self")
    assert ok.returncode == 0, ok.stderr


def test_daemon_warns_about_an_unknown_netns_and_picks_it_up_when_it_appears(tmp_path):
    name = f"secvalues-late-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "xtcp2", "--mode", "poll", "-frequency", "200ms",
                                 "-timeout", "200ms", "-dest", "null", "-d", "10", "--netns", name,
                                 "-promListen", "127.0.0.1:0", "-grpcPort", "0"], stdout=fh, stderr=subprocess.STDOUT)
    created = False
    try:
        def wait_log(text: str, timeout: float = 20) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                got = log.read_text()
                if text in got:
                    return got
                assert proc.poll() is None, got
                time.sleep(0.1)
            raise AssertionError(f"{text!r} not logged:\n{log.read_text()[-3000:]}")

        got = wait_log(f"--netns {name}: no such network namespace")
        time.sleep(1.0)  # several polls later: said once, not once per poll
        assert log.read_text().count(f"--netns {name}: no such") == 1
        subprocess.run(["ip", "netns", "add", name], check=True)
        created = True
        got = wait_log(f"--netns {name}: namespace appeared")
        got = wait_log(f"netns {name}: watching (inode {os.stat(f'/run/netns/{name}').st_ino}")
        assert "Traceback" not in got
    finally:
        proc.terminate()
        proc.wait(30)
        if created:
            subprocess.run(["ip", "netns", "del", name], check=False)
