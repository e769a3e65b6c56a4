"""The dockerd the image test runs its image under (tests/servers/dockerd.py)."""
from __future__ import annotations

import pytest

from ..servers.dockerd import start_dockerd


@pytest.fixture(scope="session")
def dockerd():
    d = start_dockerd("xtcp2-ops-dockerd-", tools=("mmdebstrap",))
    try:
        yield d
    finally:
        d.destroy()
