"""The wheel carries the compiled CO-RE object: a host with the wheel and libbpf1 runs
--mode bpf without clang, llvm or bpftool. The sdist carries the sources instead."""
from __future__ import annotations

import os
import pathlib
import platform
import shutil
import signal
import subprocess
import tarfile
import time
import zipfile

import pytest

from tests.daemon_process import free_port

pytestmark = [pytest.mark.slow]


def test_wheel_has_the_bpf_object_and_spdx_license(built):
    _, wheel = built
    assert wheel.name.endswith(f"-py3-none-linux_{platform.machine()}.whl"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for stem in ("tcp_events", "tcp_iter"):
            obj = next(n for n in names if n.endswith(f"xtcp2/ebpf/bpf/{stem}.bpf.o"))
            assert z.read(obj)[:4] == b"\x7fELF"
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta
    assert "License-File: LICENSE" in meta
    assert not any(n.endswith("vmlinux.h") for n in names)


def test_sdist_carries_sources_not_objects(built):
    sdist, _ = built
    with tarfile.open(sdist) as t:
        names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    assert {"bpf/Makefile", "bpf/tcp_events.bpf.c", "setup.py", "LICENSE"} <= set(names)
    assert not [n for n in names if n.endswith(".bpf.o")], "the sdist builds the object from source"


@pytest.mark.root
def test_fresh_venv_runs_bpf_mode_without_compilers(wheel_venv, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("bpf mode needs root")
    # only the venv on PATH: no clang, llc or bpftool can be reached
    env = {"PATH": str(wheel_venv), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    assert shutil.which("clang", path=env["PATH"]) is None
    where = subprocess.run([str(wheel_venv / "python"), "-c",
                            "from xtcp2.ebpf import loader, tcp_iter; print(loader.object_path(), tcp_iter.object_path())"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    for path, stem in zip(where, ("tcp_events", "tcp_iter")):
        assert pathlib.Path(path).is_relative_to(wheel_venv.parent), path
        assert path.endswith(f"xtcp2/ebpf/bpf/{stem}.bpf.o")

    log = tmp_path / "daemon.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(wheel_venv / "xtcp2"), "--mode", "bpf", "-dest", "null", "-frequency", "1s",
                                 "-promListen", f"127.0.0.1:{free_port()}", "-grpcPort", str(free_port())],
                                env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            deadline = time.monotonic() + 60
            while "bpf events" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.2)
            text = log.read_text()
            assert "mode bpf: BPF programs load and attach" in text, text[-2000:]
            assert "bpf events" in text, text[-2000:]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
