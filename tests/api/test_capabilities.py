"""Capability check: processes started with capabilities really dropped (capsh / setpriv)."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from xtcp2.api import capabilities as caps

pytestmark = pytest.mark.root
ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_dropped(tool: list[str], argv: list[str]) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop capabilities")
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} not installed (scripts/apt-test.txt)")
    return subprocess.run([*tool, *argv], capture_output=True, text=True, timeout=60, cwd=ROOT)


def capsh_drop(names: str) -> list[str]:
    return ["capsh", f"--drop={names}", "--"]


def test_effective_set_parsed(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000008000201000\n")
    assert caps.effective_caps(str(status)) == {caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN, caps.CAP_BPF}


def test_full_privileges_pass():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    report = caps.check("poll")
    assert report.ok and report.message() == ""
    assert {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"} <= set(report.names())


def test_poll_without_net_admin_and_sys_admin():
    proc = run_dropped(capsh_drop("cap_net_admin,cap_sys_admin"),
                       ["-c", f"exec {sys.executable} -m xtcp2.api.capabilities poll"])
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    msg = lines[0]
    assert msg.startswith("xtcp2: --mode poll cannot start: missing CAP_NET_ADMIN")
    assert "CAP_SYS_ADMIN (setns into other network namespaces)" in msg
    assert "AmbientCapabilities=" in msg and "Traceback" not in proc.stderr


def test_own_namespace_only_needs_no_sys_admin():
    code = ("from xtcp2.api import capabilities as c; r = c.check('poll', own_netns_only=True); "
            "print(r.ok, len(r.missing)); print(*r.warnings, sep=chr(10))")
    proc = run_dropped(capsh_drop("cap_sys_admin"), ["-c", f"exec {sys.executable} -c \"{code}\""])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "True 0"
    assert "CAP_SYS_ADMIN missing: only the daemon's own network namespace is polled" in out[1:]


def test_bpf_without_bpf_caps_via_setpriv():
    # setpriv removes them from the bounding set: what a hardened unit without them looks like
    proc = run_dropped(["setpriv", "--inh-caps=-all", "--ambient-caps=-all",
                        "--bounding-set=-bpf,-perfmon,-sys_admin", "--"],
                       [sys.executable, "-m", "xtcp2.api.capabilities", "bpf"])
    assert proc.returncode == 2, proc
    msg = proc.stderr.strip()
    assert "CAP_BPF (loading BPF programs and maps)" in msg and "CAP_PERFMON" in msg
    assert "CAP_NET_ADMIN (" not in msg  # still held, so not reported


def test_auto_mode_degrades_with_a_warning():
    code = ("from xtcp2.api import capabilities as c; r = c.check('auto'); "
            "print(r.ok); print(*r.warnings, sep='\\n')")
    proc = run_dropped(["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-bpf,-perfmon", "--"],
                       [sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "True"
    assert not any("CAP_BPF" in w for w in out[1:])  # CAP_SYS_ADMIN still implies it
    proc = run_dropped(["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin",
                        "--"], [sys.executable, "-c", code.replace("'auto'", "'auto', own_netns_only=True")])
    out = proc.stdout.splitlines()
    assert out[0] == "True"
    assert any(w.startswith("CAP_BPF missing") and "falls back to poll mode" in w for w in out[1:]), out


def test_daemon_exits_2_with_the_message():
    proc = run_dropped(capsh_drop("cap_net_admin,cap_sys_admin"),
                       ["-c", f"exec {sys.executable} -m xtcp2 --mode poll -dest null -maxLoops 1 -grpcPort 0 "
                              f"-promListen 127.0.0.1:0"])
    assert proc.returncode == 2, proc
    # log lines may precede it; the verdict itself is one line
    verdict = [line for line in proc.stderr.splitlines() if line.startswith("xtcp2: ")]
    assert len(verdict) == 1, proc.stderr
    assert verdict[0].startswith("xtcp2: --mode poll cannot start: missing CAP_NET_ADMIN")
    assert "AmbientCapabilities=" in verdict[0] and "Traceback" not in proc.stderr
