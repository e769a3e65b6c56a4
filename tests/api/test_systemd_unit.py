"""The hardened systemd unit: systemd itself parses it and rates its exposure; its
capabilities match what the capability check asks for; its default arguments parse."""
from __future__ import annotations

import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

from xtcp2.api import capabilities as caps

UNIT = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "xtcp2.service"
DEFAULTS = UNIT.with_name("xtcp2.default")


def directive(name: str) -> str:
    m = re.search(rf"^{name}=(.*)$", UNIT.read_text(), re.M)
    assert m, name
    return m.group(1).strip()


def unit_for_systemd(tmp_path) -> pathlib.Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    # verify checks that ExecStart exists; point it at a binary present on this machine
    unit = tmp_path / "xtcp2.service"
    unit.write_text(UNIT.read_text().replace("/opt/xtcp2/bin/xtcp2", "/bin/true"))
    return unit


def test_systemd_accepts_the_unit(tmp_path):
    unit = unit_for_systemd(tmp_path)
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_exposure_is_low(tmp_path):
    unit = unit_for_systemd(tmp_path)
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for xtcp2\.service: ([0-9.]+)", res.stdout)
    assert m, res.stdout[-2000:] + res.stderr
    assert float(m.group(1)) <= 4.0, res.stdout[-3000:]


def test_capabilities_match_the_check():
    ambient = set(directive("AmbientCapabilities").split())
    bounding = set(directive("CapabilityBoundingSet").split())
    assert ambient == bounding == set(caps.CAP_NAMES.values())
    assert directive("RestartPreventExitStatus") == "2"  # missing capability: restarting cannot help
    assert directive("Restart") == "on-failure"
    assert directive("ProtectSystem") == "strict" and directive("PrivateTmp") == "yes"
    assert "net" == directive("RestrictNamespaces")
    # sd_notify: READY and WATCHDOG from the main process (xtcp2/api/health.py)
    assert (directive("Type"), directive("NotifyAccess")) == ("notify", "main")
    assert directive("WatchdogSec") == "30s"
    assert "AF_UNIX" in directive("RestrictAddressFamilies").split()  # $NOTIFY_SOCKET


def test_unit_runs_the_packaged_binary():
    # what `pip install xtcp2-*.whl` into the /opt/xtcp2 venv provides, not a checkout
    assert directive("ExecStart").split()[0] == "/opt/xtcp2/bin/xtcp2"


def test_default_arguments_parse():
    from xtcp2.cli import build_parser, config_from_args

    m = re.search(r'^XTCP2_ARGS="(.*)"$', DEFAULTS.read_text(), re.M)
    assert m
    cfg = config_from_args(build_parser().parse_args(shlex.split(m.group(1))))
    assert (cfg.grpc_listen, cfg.prom_listen) == ("127.0.0.1", "127.0.0.1:9088")
    assert cfg.poll_frequency == 30.0
