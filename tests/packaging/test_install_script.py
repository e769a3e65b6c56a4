"""scripts/install.sh installs compilers only when a BPF object has to be built."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPILERS = {"clang", "llvm", "bpftool", "libbpf-dev", "gcc"}


def _plan(tree: pathlib.Path, *args: str) -> dict[str, str]:
    out = subprocess.run(["bash", str(tree / "scripts" / "install.sh"), "--dry-run", *args],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split(": ", 1) for line in out.splitlines())


def _tree(tmp_path: pathlib.Path) -> pathlib.Path:
    tree = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(tree)], check=True)
    return tree


def test_checkout_without_objects_installs_compilers(tmp_path):
    plan = _plan(_tree(tmp_path))
    assert COMPILERS <= set(plan["apt"].split())
    assert plan["build bpf"] == "1"


def test_prebuilt_objects_need_no_compilers(tmp_path):
    tree = _tree(tmp_path)
    for src in (tree / "bpf").glob("*.bpf.c"):
        shutil.copy(ROOT / "bpf" / src.name.replace(".c", ".o"), src.with_suffix(".o"))
    plan = _plan(tree)
    assert "libbpf1" in plan["apt"].split()
    assert not COMPILERS & set(plan["apt"].split()), plan["apt"]
    assert plan["build bpf"] == "0"
    # a source newer than its object means the object is stale: build it again
    src = next((tree / "bpf").glob("*.bpf.c"))
    os.utime(src, (src.stat().st_mtime + 10,) * 2)
    assert _plan(tree)["build bpf"] == "1"


def test_wheel_install_needs_no_compilers(tmp_path):
    plan = _plan(_tree(tmp_path), "--wheel", "dist/xtcp2-0.1.0-py3-none-linux_x86_64.whl")
    assert not COMPILERS & set(plan["apt"].split())
    assert plan["pip"] == "install dist/xtcp2-0.1.0-py3-none-linux_x86_64.whl[all]"


def test_test_install_keeps_compilers(tmp_path):
    plan = _plan(_tree(tmp_path), "--test")
    assert COMPILERS <= set(plan["apt"].split())
