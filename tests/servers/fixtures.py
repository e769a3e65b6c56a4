"""pytest fixtures for the real servers in tests.servers. Import with
`from tests.servers.fixtures import *` in a conftest.py.

A missing server skips the test, or fails it under CI=true (tests/need.py).
Each fixture is function-scoped (a fresh server per test: they start in well under a
second, SeaweedFS in ~2 s) and always killed and removed, pass or fail.
"""
from __future__ import annotations

import pytest

from ..need import missing
from . import NatsServer, SeaweedS3, ServerProcess, Tansu, Valkey
from .nsq_double import NsqdDouble


def _server(cls: type[ServerProcess]):
    binary = cls.locate()
    if binary is None:
        missing(cls.name, f"{cls.install_hint}; scripts/install.sh --test installs it")
    srv = cls(binary)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


@pytest.fixture
def tansu():
    yield from _server(Tansu)


@pytest.fixture
def nats_server():
    yield from _server(NatsServer)


@pytest.fixture
def valkey_server():
    yield from _server(Valkey)


@pytest.fixture
def seaweed_s3():
    yield from _server(SeaweedS3)


@pytest.fixture
def nsqd_double():
    srv = NsqdDouble()
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


__all__ = ["tansu", "nats_server", "valkey_server", "seaweed_s3", "nsqd_double"]
