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
                        "-timeout", "500s", "-readyTimeout", "150s"], capture_output=True, text=True, timeout=560)
    took = time.monotonic() - t0
    out = r.stdout
    print(out[-6000:], r.stderr[-2000:], f"took {took:.1f} s", sep="\n")
    # the guest really booted Debian's 6.1 kernel and ran this project's python inside it
    assert re.search(r"XTCP2_MICROVM_GUEST_START flavor=lifecycle kernel=6\.1\.0-\d+-amd64", out), r.stderr
    # bpf mode loads there too: CO-RE relocations resolve against the guest's BTF, and
    # CONFIG_HZ comes from the jiffies counter (the guest sees the host's /boot, not its own)
    assert re.search(r"^XTCP2_MICROVM_DAEMON_SAYS .*mode auto: using bpf", out, re.M), "daemon not in bpf mode"
    sentinels = re.findall(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)\r?$", out, re.M)
    assert [name for name, _ in sentinels] == list(CHECK_NAMES) + ["OVERALL"]
    assert "XTCP2_MICROVM_GUEST_EXIT" in out  # init powered the guest off by itself
    results = dict(sentinels)
    failed = [n for n in CHECK_NAMES if results[n] != "PASS"]
    assert not failed, f"checks failed in the guest: {failed}"
    assert results["OVERALL"] == "PASS" and r.returncode == 0


@pytest.mark.timeout(600)
def test_collectors_microvm_iterator_matches_inet_diag_on_6_1():
    """tests/ebpf/test_iter.py run inside the guest: the iterator object, built against
    this host's BTF, loads on 6.1 and yields what 6.1's inet_diag does."""
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.microvm", "collectors", "-cacheDir", CACHE,
                        "-timeout", "420s"], capture_output=True, text=True, timeout=500)
    out = r.stdout
    print(out[-6000:], r.stderr[-2000:], sep="\n")
    assert re.search(r"XTCP2_MICROVM_GUEST_START flavor=collectors kernel=6\.1\.0-\d+-amd64", out), r.stderr
    assert "XTCP2_MICROVM_ITER_LOAD ok" in out
    m = re.search(r"^XTCP2_MICROVM_ITER_COMPARE_(PASS|FAIL|SKIP) (.*)$", out, re.M)
    assert m and m.group(1) == "PASS", m.group(0) if m else "no ITER_COMPARE line"
    assert re.search(r"kernel=6\.1\.0-\d+-amd64 (\d+) passed", m.group(2)), m.group(2)
    assert r.returncode == 0
