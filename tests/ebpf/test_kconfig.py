"""CONFIG_HZ for the BPF objects where libbpf cannot find a kernel config (containers,
Debian kernels without /proc/config.gz when /boot is not mounted).

The fallback measures HZ from the jiffies counter; the check against the real value
uses this kernel's own config. The end-to-end test hides every config file in a private
mount namespace and runs the iterator-vs-inet_diag comparison there: a wrong HZ would
scale tcpi_rto, tcpi_ato and the timers, which that test compares exactly.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xtcp2.ebpf import kconfig

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


def _config_files() -> list[str]:
    return [p for p in (f"/boot/config-{os.uname().release}", "/proc/config.gz") if os.path.exists(p)]


def test_measured_hz_is_the_kernel_config_hz():
    files = [p for p in _config_files() if kconfig.hz_from_config(p)]
    if not files:
        pytest.skip("this kernel exposes no config to check the measurement against")
    assert kconfig.measure_hz() == kconfig.hz_from_config(files[0])


@pytest.mark.parametrize("ticks,hz", [(99.0, 100), (262.0, 250), (281.0, 300), (968.0, 1000)])
def test_measured_rate_rounds_to_a_kconfig_choice(ticks, hz):
    assert kconfig.nearest_hz(ticks) == hz


def test_hz_read_from_plain_and_gzip_configs(tmp_path):
    plain = tmp_path / "config-x"
    plain.write_bytes(b"# comment\nCONFIG_HZ_300=y\nCONFIG_HZ=300\n")
    gz = tmp_path / "config.gz"
    gz.write_bytes(gzip.compress(b"CONFIG_HZ=1000\n"))
    empty = tmp_path / "empty.gz"
    empty.write_bytes(b"")
    assert kconfig.hz_from_config(str(plain)) == 300
    assert kconfig.hz_from_config(str(gz)) == 1000
    assert kconfig.hz_from_config(str(empty)) is None
    assert kconfig.hz_from_config(str(tmp_path / "absent")) is None


HIDDEN = r"""
import sys
from xtcp2.ebpf import kconfig
print("HZ", kconfig.kernel_hz(), flush=True)
"""


def test_iterator_matches_inet_diag_with_every_kernel_config_hidden():
    files = _config_files()
    if not files:
        pytest.skip("no kernel config file on this host: the fallback is what always runs here")
    real_hz = kconfig.hz_from_config(files[0])
    # /dev/null over each config file: libbpf's own lookup would now read an empty config
    # and load with HZ 0; ours must measure instead.
    hide = " && ".join(f"mount --bind /dev/null {f}" for f in files)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"{hide} && exec \"$0\" -c \"$1\"",
                            sys.executable, HIDDEN], capture_output=True, text=True, env=env, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["HZ", str(real_hz)]
    test = f"{REPO}/tests/ebpf/test_iter.py::test_iterator_records_equal_inet_diag"
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"{hide} && exec \"$0\" -m pytest -q -p no:cacheprovider \"$1\"",
                        sys.executable, test], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout
