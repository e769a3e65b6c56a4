"""xtcp2: per-socket TCP telemetry for every network namespace."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
