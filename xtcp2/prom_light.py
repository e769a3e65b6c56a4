"""prometheus_client's metric classes, without what its package __init__ imports.

`import prometheus_client` runs its package __init__, which imports the HTTP
exposition: http.server, wsgiref, urllib.request, ssl and email, ~30 ms of a
one-shot `xtcp2 --once` that never serves /metrics. The metric classes themselves
live in submodules (metrics, registry, metrics_core) that need none of it.

So, unless prometheus_client is already imported, this installs a stand-in package
module that lets those submodules load on their own. The stand-in is replaced by the
real package the first time anything else is asked of it (`from prometheus_client
import REGISTRY, generate_latest`, ...: PEP 562 module __getattr__), which then reuses
the submodules already loaded: one REGISTRY, one set of classes, whichever came first.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

_PKG = "prometheus_client"


def _real_package(name: str):
    """Swap the stand-in for the real package (its __init__ runs now) and return name.
    A submodule (`from . import values` inside metrics.py) just loads that submodule."""
    stand_in = sys.modules.get(_PKG)
    if getattr(stand_in, "__xtcp2_stand_in__", False) and any(
            os.path.exists(os.path.join(d, name + ".py")) or os.path.isdir(os.path.join(d, name))
            for d in stand_in.__path__):
        return importlib.import_module(f"{_PKG}.{name}")
    if getattr(stand_in, "__xtcp2_stand_in__", False):
        del sys.modules[_PKG]
        real = importlib.import_module(_PKG)
        stand_in.__dict__.update({k: v for k, v in real.__dict__.items() if k != "__getattr__"})
        stand_in.__xtcp2_stand_in__ = False
        del stand_in.__getattr__
    return getattr(sys.modules[_PKG], name)


def _install_stand_in() -> None:
    if _PKG in sys.modules:
        return
    spec = importlib.util.find_spec(_PKG)
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the imports below fail with the usual error
    pkg = types.ModuleType(_PKG, "stand-in until the real package is needed (xtcp2/prom_light.py)")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__file__ = spec.origin
    pkg.__xtcp2_stand_in__ = True
    pkg.__getattr__ = _real_package
    sys.modules[_PKG] = pkg


_install_stand_in()

from prometheus_client.metrics import Counter, Gauge, Histogram  # noqa: E402
from prometheus_client.metrics_core import (  # noqa: E402
    CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily,
)
from prometheus_client.registry import REGISTRY, Collector  # noqa: E402

__all__ = ["Counter", "Gauge", "Histogram", "REGISTRY", "Collector", "CounterMetricFamily",
           "GaugeMetricFamily", "GaugeHistogramMetricFamily"]
