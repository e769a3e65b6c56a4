"""Boots microVM flavors for real (Debian 6.1 kernel, TCG here) and reads their consoles."""
import os
import re
import subprocess
import sys
import time

import pytest

from tests import need
from xtcp2.tools.microvm import default_cache_dir
from xtcp2.tools.selftest import CHECK_NAMES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
CACHE = os.environ.get("XTCP2_MICROVM_CACHE", default_cache_dir())
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_flavor(*args: str, timeout: float = 560) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.microvm", *args, "-cacheDir", CACHE],
                       capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    print(r.stdout[-6000:], r.stderr[-2000:], f"took {took:.1f} s", sep="\n")
    return r, took


@pytest.mark.timeout(600)
def test_clickhouse_pipeline_microvm_rows_grow_and_reconcile():
    """xtcp2 -> Tansu -> xtcp2_kafka_to_clickhouse -> chdb inside the guest; the monitor's
    rows grow while the daemon runs and end equal to what Kafka acknowledged."""
    r, _ = _run_flavor("clickhouse-pipeline", "-duration", "20s", "-timeout", "450s")
    out = r.stdout
    assert re.search(r"XTCP2_MICROVM_GUEST_START flavor=clickhouse-pipeline kernel=6\.1\.0-\d+-amd64", out), r.stderr
    assert "XTCP2_CLICKPIPE_BROKER_READY tansu 127.0.0.1:9092" in out
    assert "XTCP2_CLICKPIPE_BRIDGE_READY first rows stored" in out
    row_line = r"^XTCP2_CLICKPIPE_ROWS \S+Z rows=(\d+) netns=\d+ .*disk=\d+\r?$"
    rows = [int(x) for x in re.findall(row_line, out, re.M)]
    assert len(rows) >= 3 and rows == sorted(rows) and rows[-1] > rows[0], rows
    # while the daemon ran live (after the bridge had caught up), rows rose more than once
    live = [int(x) for x in re.findall(row_line, out.split("XTCP2_CLICKPIPE_BRIDGE_READY", 1)[1], re.M)]
    assert sum(b > a for a, b in zip(live, live[1:])) >= 2, live
    summary = re.search(r"^XTCP2_CLICKPIPE_SUMMARY .*daemon delivered=(\d+) dropped=(\d+) .*table rows=(\d+) "
                        r"netns=(\d+) kafka_exc=(\d+)", out, re.M)
    assert summary, out[-3000:]
    delivered, dropped, table_rows, netns, kafka_exc = map(int, summary.groups())
    assert delivered == table_rows == rows[-1] > 0 and dropped == 0 and kafka_exc == 0
    assert netns >= 2  # the daemon's namespace and the one with the traffic
    assert re.search(r"^XTCP2_CLICKPIPE_PASS\r?$", out, re.M) and "XTCP2_MICROVM_GUEST_EXIT rc=0" in out
    assert re.search(r"clickhouse-pipeline: rows \d+ -> \d+ over \d+ readings, \d+ rises, 0 falls", r.stderr)
    assert r.returncode == 0


@pytest.mark.timeout(600)
def test_lifecycle_coverage_microvm_writes_data_the_host_merges(tmp_path):
    coverage = need.module("coverage")
    share = tmp_path / "cov"
    r, _ = _run_flavor("lifecycle-coverage", "-coverDir", str(share), "-timeout", "500s")
    out = r.stdout
    assert re.search(r"XTCP2_MICROVM_GUEST_START flavor=lifecycle-coverage kernel=6\.1\.0-\d+-amd64", out), r.stderr
    # bpf mode loads in the guest: CO-RE relocations resolve against its 6.1 BTF, and
    # CONFIG_HZ comes from the jiffies counter (no kernel config file of its own there)
    assert re.search(r"^XTCP2_MICROVM_DAEMON_SAYS .*mode auto: using bpf", out, re.M), "daemon not in bpf mode"
    sentinels = re.findall(r"^XTCP2_SELF_TEST_([A-Z_]+)_(PASS|FAIL)\r?$", out, re.M)
    assert sentinels == [(n, "PASS") for n in CHECK_NAMES] + [("OVERALL", "PASS")], sentinels
    assert "XTCP2_MICROVM_GUEST_EXIT" in out  # init powered the guest off by itself
    data = re.search(r"^XTCP2_COVERAGE_DATA files=(\d+) bytes=\d+ daemon=yes dir=(\S+)\r?$", out, re.M)
    assert data and int(data.group(1)) >= 2 and data.group(2) == str(share)
    assert re.search(r"^XTCP2_LIFECYCLE_COVERAGE_PASS\r?$", out, re.M)
    # the host's half: merged, reported
    assert re.search(rf"^XTCP2_COVERAGE_COMBINED data_files={data.group(1)} ", out, re.M)
    total = re.search(r"^XTCP2_COVERAGE_TOTAL pct=([\d.]+) .*daemon_lines=(\d+) selftest_lines=(\d+)", out, re.M)
    assert total and 0 < float(total.group(1)) < 100 and int(total.group(2)) > 0 and int(total.group(3)) > 0
    assert re.search(r"^XTCP2_COVERAGE_REPORT_PASS\r?$", out, re.M) and r.returncode == 0
    merged = coverage.CoverageData(str(share / ".coverage"))
    merged.read()
    lines = {f: len(merged.lines(f)) for f in merged.measured_files()}
    executed = {os.path.relpath(f, ROOT) for f, n in lines.items() if n}
    # the daemon (bpf mode, its collector's refresh) and the self-test both ran measured in the guest
    assert {"xtcp2/daemon.py", "xtcp2/modes/bpf.py", "xtcp2/collect/netlink.py",
            "xtcp2/tools/selftest.py"} <= executed, sorted(executed)
    assert "xtcp2/daemon.py" in (share / "coverage-report.txt").read_text()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("docker", [True], ids=["containers"])
def test_tcp_stress_microvm_with_docker_containers_or_the_fallback(docker):
    """tcp-stress: 3 containers x 30 sockets run by a dockerd started in the guest (each
    container's sockets counted under its name in xtcp2_tcp_sockets). The -docker=false
    fallback (docker-style bind-mounted namespaces) is one parameter away; it is left
    out of the suite to keep CI's microVM time down (the lifecycle guest runs NS_DOCKER's
    bind-mount fallback)."""
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
    """tests/ebpf/test_iter.py and test_owner.py run inside the guest: the BPF objects,
    built against this host's BTF, load on 6.1; the iterator yields what 6.1's inet_diag
    does, and bpf mode names owners at connect() and listen()."""
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
