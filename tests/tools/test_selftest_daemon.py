"""The self-test against a real daemon on the host: all ten checks must pass."""
import re

import pytest

from xtcp2.tools.selftest import CHECK_NAMES

from .conftest import needs_root, tool

pytestmark = [needs_root, pytest.mark.slow]


def test_selftest_against_running_daemon(daemon):
    r = tool("selftest", "-pid", str(daemon.proc.pid), "-metrics", daemon.url,
             "-grpcPort", str(daemon.grpc_port), "-wait", "30s", timeout=400)
    print(r.stdout)
    results = dict(re.findall(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)$", r.stdout, re.M))
    assert list(results) == list(CHECK_NAMES) + ["OVERALL"]
    assert daemon.proc.poll() is None, daemon.log_text()[-3000:]
    failed = [n for n in CHECK_NAMES if results[n] != "PASS"]
    assert not failed, r.stdout + daemon.log_text()[-3000:]
    assert results["OVERALL"] == "PASS" and r.returncode == 0
