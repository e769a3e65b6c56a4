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


@pytest.mark.timeout(900)
@pytest.mark.parametrize("docker", [True, False], ids=["containers", "bind_mount_fallback"])
def test_tcp_stress_microvm_with_docker_containers_or_the_fallback(docker):
    """tcp-stress: 3 containers x 30 sockets run by a dockerd started in the guest (each
    container's sockets counted under its name in xtcp2_tcp_sockets), or, with
    -docker=false, docker-style bind-mounted namespaces; the console says which."""
    from tests.need import binary
    if docker:
        for tool in ("dockerd", "docker", "busybox"):
            binary(tool)
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.microvm", "tcp-stress", "-cacheDir", CACHE,
                        "-namespaces", "3", "-sockets", "30", "-duration", "20s", "-mem", "2048",
                        "-timeout", "700s", "-readyTimeout", "240s", f"-docker={str(docker).lower()}"],
                       capture_output=True, text=True, timeout=800)
    out = r.stdout
    print(out[-6000:], r.stderr[-2000:], sep="\n")
    mode = re.search(r"^XTCP2_TCP_STRESS_MODE (\S+): (.*)$", out, re.M)
    assert mode, r.stderr
    summary = re.search(r"^XTCP2_TCP_STRESS_SUMMARY (.*)$", out, re.M)
    assert summary, r.stderr
    fields = dict(kv.split("=", 1) for kv in summary.group(1).split())
    if docker:
        assert mode.group(1) == "docker", mode.group(0)
        assert fields["mode"] == "docker" and fields["containers"] == "3" and fields["named_in_metrics"] == "3"
    else:
        assert mode.group(1) == "bind-mount" and mode.group(2).startswith("-docker=false"), mode.group(0)
        assert fields["mode"] == "bind-mount" and "containers" not in fields
    assert int(fields["watched"]) >= 4 and int(fields["sockets_per_poll"]) >= 3 * 3 * 30
    assert "XTCP2_TCP_STRESS_PASS" in out and r.returncode == 0


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
