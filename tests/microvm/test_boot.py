"""Boots the lifecycle microVM for real (Debian 6.1 kernel, TCG here) and reads its console."""
import os
import re
import subprocess
import sys
import time

import pytest

from xtcp2.tools.microvm import default_cache_dir
from xtcp2.tools.selftest import CHECK_NAMES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
CACHE = os.environ.get("XTCP2_MICROVM_CACHE", default_cache_dir())


@pytest.mark.timeout(600)
def test_lifecycle_microvm_boots_and_runs_the_self_test():
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.microvm", "lifecycle", "-cacheDir", CACHE,
                        "-timeout", "420s"], capture_output=True, text=True, timeout=560)
    took = time.monotonic() - t0
    out = r.stdout
    print(out[-6000:], r.stderr[-2000:], f"took {took:.1f} s", sep="\n")
    # the guest really booted Debian's 6.1 kernel and ran this project's python inside it
    assert re.search(r"XTCP2_MICROVM_GUEST_START flavor=lifecycle kernel=6\.1\.0-\d+-amd64", out), r.stderr
    sentinels = re.findall(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)\r?$", out, re.M)
    assert [name for name, _ in sentinels] == list(CHECK_NAMES) + ["OVERALL"]
    assert "XTCP2_MICROVM_GUEST_EXIT" in out  # init powered the guest off by itself
    results = dict(sentinels)
    failed = [n for n in CHECK_NAMES if results[n] != "PASS"]
    assert not failed, f"checks failed in the guest: {failed}"
    assert results["OVERALL"] == "PASS" and r.returncode == 0
