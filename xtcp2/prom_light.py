"""Counter, Gauge and Histogram for xtcp2's own metrics, exposed on prometheus_client's
default REGISTRY through one collector, without importing prometheus_client's metric
machinery.

A one-shot `xtcp2 --once` counts what it does (drops, errors) but never serves
/metrics, and prometheus_client costs it start-up time twice over:
- `import prometheus_client` runs the package __init__, which imports the HTTP
  exposition (http.server, wsgiref, urllib.request, ssl, email): ~30 ms;
- its metric module (values, mmap_dict, context managers, decorators) and the
  construction of ~70 metrics: ~5 ms more.
So the metrics here keep their values in plain Python (one lock per series, as
prometheus_client's) and become prometheus_client metric families only when the
registry is scraped. They offer the part of its API xtcp2 uses: labels(), inc(), dec(),
set(), observe(), remove(), clear() and collect(). Modules that only run while serving
(xtcp2.api) use prometheus_client's own classes; both end up on the same REGISTRY.

The registry module itself is light, and loads here through a stand-in package
module that lets prometheus_client's submodules load without its __init__. The
stand-in is replaced by the real package the first time anything else is asked of it
(`from prometheus_client import REGISTRY, generate_latest`, ...: PEP 562 module
__getattr__), which then reuses the submodules already loaded: one REGISTRY whichever
came first.
"""
from __future__ import annotations

import bisect
import importlib
import importlib.util
import itertools
import os
import sys
import threading
import types
from typing import Iterable, Iterator

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

from prometheus_client.metrics_core import (  # noqa: E402
    CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.registry import REGISTRY, Collector  # noqa: E402
from prometheus_client.utils import INF, floatToGoString  # noqa: E402

DEFAULT_BUCKETS = (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1.0, 2.5, 5.0, 7.5, 10.0, INF)


class _Series:
    """One labelled series of a counter or gauge."""

    __slots__ = ("_lock", "_value", "_counter")

    def __init__(self, counter: bool) -> None:
        self._lock = threading.Lock()
        self._value = 0.0
        self._counter = counter

    def inc(self, amount: float = 1) -> None:
        if self._counter and amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1) -> None:
        with self._lock:
            self._value -= amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def get(self) -> float:
        with self._lock:
            return float(self._value)


class _HistogramSeries:
    __slots__ = ("_lock", "_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._lock = threading.Lock()
        self._bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        i = bisect.bisect_left(self._bounds, amount)   # bounds are upper bounds, inclusive
        with self._lock:
            self._counts[i] += 1
            self._sum += amount

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._counts), self._sum


_NAMES: set[str] = set()


class _Metric:
    _kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> None:
        self._labelnames = tuple(labelnames)
        base = name.removesuffix("_total") if self._kind == "counter" else name
        if base in _NAMES:
            raise ValueError(f"Duplicated timeseries in CollectorRegistry: {base}")
        _NAMES.add(base)
        self._name = base
        self._documentation = documentation
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], object] = {}
        self._own = None if self._labelnames else self._new_series()
        _EXPOSED.metrics.append(self)

    def _new_series(self):
        raise NotImplementedError

    def labels(self, *values: object, **named: object):
        """The series of these label values, created at zero on first use."""
        if named:
            if values or set(named) != set(self._labelnames):
                raise ValueError(f"{self._name}: label names are {self._labelnames}")
            values = tuple(named[n] for n in self._labelnames)
        if not self._labelnames:
            raise ValueError(f"No label names were set when constructing {self._name}")
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name}: incorrect label count (expected {len(self._labelnames)})")
        key = tuple(str(v) for v in values)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.setdefault(key, self._new_series())
        return series

    def remove(self, *values: object) -> None:
        with self._lock:
            self._series.pop(tuple(str(v) for v in values), None)

    def clear(self) -> None:
        with self._lock:
            self._series.clear()

    def _unlabelled(self):
        if self._own is None:
            raise ValueError(f"{self._name} is labelled: call .labels() first")
        return self._own

    def _items(self) -> list[tuple[tuple[str, ...], object]]:
        if self._own is not None:
            return [((), self._own)]
        with self._lock:
            return list(self._series.items())

    def collect(self) -> list[Metric]:
        raise NotImplementedError


class _Scalar(_Metric):
    """A metric whose series hold one number: a counter or a gauge."""

    _family: type = Metric

    def _new_series(self) -> _Series:
        return _Series(counter=self._kind == "counter")

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def collect(self) -> list[Metric]:
        fam = self._family(self._name, self._documentation, labels=self._labelnames)
        for key, series in self._items():
            fam.add_metric(key, series.get())
        return [fam]


class Counter(_Scalar):
    _kind = "counter"
    _family = CounterMetricFamily


class Gauge(_Scalar):
    _kind = "gauge"
    _family = GaugeMetricFamily

    def dec(self, amount: float = 1) -> None:
        self._unlabelled().dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)


class Histogram(_Metric):
    _kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (),
                 buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(bounds):
            raise ValueError(f"{name}: buckets not in sorted order")
        if not bounds or bounds[-1] != INF:
            bounds += (INF,)
        self._bounds = bounds
        super().__init__(name, documentation, labelnames)

    def _new_series(self) -> _HistogramSeries:
        return _HistogramSeries(self._bounds)

    def observe(self, amount: float) -> None:
        self._unlabelled().observe(amount)

    def collect(self) -> list[Metric]:
        fam = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        les = [floatToGoString(b) for b in self._bounds]   # the `le` labels as prometheus_client writes them
        for key, series in self._items():
            counts, total = series.snapshot()
            fam.add_metric(key, list(zip(les, itertools.accumulate(counts))), total)
        return [fam]


class _Exposition(Collector):
    """Every metric defined here, as one collector on the REGISTRY."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def describe(self) -> list[Metric]:
        return []   # names are checked for duplicates at definition (_NAMES)

    def collect(self) -> Iterator[Metric]:
        for m in list(self.metrics):
            yield from m.collect()


_EXPOSED = _Exposition()
REGISTRY.register(_EXPOSED)

__all__ = ["Counter", "Gauge", "Histogram", "REGISTRY", "Collector", "CounterMetricFamily",
           "GaugeMetricFamily", "GaugeHistogramMetricFamily"]
