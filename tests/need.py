"""Missing test dependencies: a skip on a developer's machine, a failure in CI.

CI (CI=true) installs everything with `scripts/install.sh --test`; a server or client
library missing there is a broken install, and a silent skip would hide it.
"""
from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str, hint: str = "scripts/install.sh --test installs it") -> NoReturn:
    msg = f"{what} not installed ({hint})"
    if in_ci():
        pytest.fail(f"{msg}; CI=true: a missing test dependency fails the suite", pytrace=False)
    pytest.skip(msg, allow_module_level=True)


def module(name: str, hint: str = "pip install -e '.[test]'") -> ModuleType:
    """importorskip, except that it fails under CI=true."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"python module {name}", hint)


def binary(name: str, hint: str = "scripts/apt-test.txt") -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name}", hint)
    return path
