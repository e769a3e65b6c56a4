"""Read xtcp2's Prometheus metrics in tests through the public CollectorRegistry API."""
from __future__ import annotations

from prometheus_client import CollectorRegistry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The current value of sample `name{labels}`.

    A labelled series nobody has touched yet reads 0; a metric family the registry does
    not have at all fails, so a renamed metric cannot make a test pass by reading None.
    """
    value = registry.get_sample_value(name, labels)
    if value is not None:
        return value
    families = {m.name for m in registry.collect()}
    base = name.removesuffix("_total")
    assert base in families or name in families, f"no metric family {name} in the registry"
    return 0.0
