"""Build hooks: compile the CO-RE BPF objects into the wheel.

Everything declarative lives in pyproject.toml. This file only adds:
- build_py runs `make -C bpf` and copies bpf/*.bpf.o into xtcp2/ebpf/bpf/, so a host with
  the wheel and libbpf1 runs --mode bpf without clang, llvm or bpftool;
- the wheel is tagged for this CPU architecture (py3-none-linux_<arch>): a BPF object is
  built for one byte order and one __TARGET_ARCH, even though CO-RE serves every kernel.

XTCP2_SKIP_BPF=1 builds a wheel without the objects (poll mode only); any other build
fails loudly when the objects cannot be compiled, rather than silently giving poll mode.
An editable install (`pip install -e .`) builds nothing here: the loader reads the
checkout's bpf/ directory, which `make -C bpf` fills.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BPF_DIR = ROOT / "bpf"
PACKAGE_BPF = Path("xtcp2", "ebpf", "bpf")  # where the loader looks inside the package


def _skip_bpf() -> bool:
    return os.environ.get("XTCP2_SKIP_BPF", "") not in ("", "0")


class BuildPyWithBpf(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or _skip_bpf():
            return
        sources = sorted(BPF_DIR.glob("*.bpf.c"))
        if not sources:
            raise SystemExit("xtcp2 build: bpf/*.bpf.c missing; set XTCP2_SKIP_BPF=1 for a poll-only wheel")
        try:
            subprocess.run(["make", "-s", "-C", str(BPF_DIR)], check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"xtcp2 build: `make -C bpf` failed ({e}); install clang, llvm, bpftool and "
                             "libbpf-dev, or set XTCP2_SKIP_BPF=1 for a poll-only wheel") from None
        dest = Path(self.build_lib) / PACKAGE_BPF
        dest.mkdir(parents=True, exist_ok=True)
        for src in sources:
            obj = src.with_name(src.name[: -len(".c")] + ".o")
            shutil.copy2(obj, dest / obj.name)


class ArchWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        if _skip_bpf():
            return super().get_tag()
        # only the tag changes: the files stay in purelib, there is no CPython extension
        plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPyWithBpf, "bdist_wheel": ArchWheel})
