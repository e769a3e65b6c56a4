"""Every console script answers Go-style -help (upstream's flag package) with exit 0."""
import os
import shutil
import subprocess
import sys
from importlib.metadata import distribution

import pytest

SCRIPTS = sorted(ep.name for ep in distribution("xtcp2").entry_points if ep.group == "console_scripts")


def test_all_expected_scripts_are_declared():
    assert {"xtcp2", "xtcp2client", "ns", "nsTest", "tcp_server", "tcp_client", "xtcp2-selftest",
            "xtcp2-microvm", "xtcp2_kafka_client", "xtcp2_kafka_to_clickhouse"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_answers_help(name):
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert exe, f"{name} is not installed"
    r = subprocess.run([exe, "-help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage" in (r.stdout + r.stderr).lower()
