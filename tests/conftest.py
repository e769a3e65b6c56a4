"""Fixtures shared by every test directory."""
from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry


@pytest.fixture
def registry() -> CollectorRegistry:
    """The registry xtcp2's metrics are registered on (prometheus_client's default: the
    metrics are module-level, defined next to their code). Read it with tests.prom.sample
    or registry.get_sample_value, never through a metric's private _value."""
    return prometheus_client.REGISTRY
