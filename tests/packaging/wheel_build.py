"""Build xtcp2's sdist and wheel once per test session, from a clean clone of HEAD, the
way a release would (python -m build: sdist first, then the wheel built from the sdist)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def build_from_clean_clone(workdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(sdist, wheel) built from `git clone` of this checkout's HEAD (what is committed)."""
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # --no-isolation: the build tools come from this venv (setuptools>=77), no index needed
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(workdir / "dist"), str(clone)],
                   check=True, capture_output=True, timeout=600)
    sdist, = (workdir / "dist").glob("xtcp2-*.tar.gz")
    wheel, = (workdir / "dist").glob("xtcp2-*.whl")
    return sdist, wheel


def make_venv(path: pathlib.Path, wheel: pathlib.Path) -> pathlib.Path:
    """A fresh venv with only the wheel and its dependencies; returns its bin/."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=900)
    return path / "bin"
