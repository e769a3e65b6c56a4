"""Shared fixtures for the tool tests: run a tool as a subprocess, a throwaway namespace."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def tool(module: str, *args: str, timeout: float = 60, netns: str | None = None) -> subprocess.CompletedProcess:
    """Run xtcp2.tools.<module> with args, optionally inside a named namespace via `ip netns exec`."""
    cmd = [sys.executable, "-m", f"xtcp2.tools.{module}", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def start_tool(module: str, *args: str, netns: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"xtcp2.tools.{module}", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def netns_name():
    """A fresh named namespace with lo up; deleted afterwards even if the test fails."""
    name = f"xt-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
