import json
import os
import subprocess
import sys
import uuid

import pytest

HERE = os.path.dirname(__file__)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def make_netns():
    """Factory: a fresh named namespace; all removed afterwards.

    10.77.0.0/24 is routed to a veth whose peer is down: a SYN sent there is never
    answered, so a connect() stays in SYN_SENT (no dummy module on this kernel).
    """
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = []

    def make() -> str:
        name = f"xt2t-{uuid.uuid4().hex[:8]}"
        _ip("netns", "add", name)
        made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", name, "addr", "add", "10.77.0.1/24", "dev", "v0")
        _ip("-n", name, "link", "set", "v0", "up")
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def populate():
    """Start socket_population.py in a namespace; returns the sockets it made."""
    procs = []

    def run(ns: str) -> list[dict]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.join(HERE, "socket_population.py")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        line = p.stdout.readline()
        assert line, "population helper died"
        return json.loads(line)

    yield run
    for p in procs:
        p.stdin.close()
        p.wait(10)
