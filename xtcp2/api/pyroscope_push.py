"""-pyroscopeUrl: push continuous CPU profiles to a Pyroscope server, as upstream does
with pyroscope-go. Python's agent is the `pyroscope-io` package (the `pyroscope` extra),
a py-spy-based sampler in a native thread; it is imported only when the flag is set,
so a daemon without it pays nothing. Asking for it without the package installed is a
one-line error at start; a server that is down is the agent's business (it retries and
drops), never the collector's.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..config import Config
from ..errors import Xtcp2Error

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_HZ = 100
DEFAULT_UPLOAD_S = 15


def start_pyroscope(config: Config) -> Callable[[], None] | None:
    """Start the agent if config.pyroscope_url is set; returns its stop function (None when off)."""
    if not config.pyroscope_url:
        return None
    try:
        import pyroscope
    except ImportError:
        raise Xtcp2Error("-pyroscopeUrl needs the pyroscope-io package: pip install 'xtcp2[pyroscope]'") from None
    hz = config.pyroscope_sample_hz or DEFAULT_SAMPLE_HZ
    upload = config.pyroscope_upload_interval_sec or DEFAULT_UPLOAD_S
    app = config.pyroscope_app_name or "xtcp2"
    try:
        # gil_only=False: netlinkers spend their time in recv and numpy without the GIL
        pyroscope.configure(application_name=app, server_address=config.pyroscope_url, sample_rate=hz,
                            upload_interval=upload, tags={"hostname": config.hostname}, gil_only=False,
                            report_thread_name=True)
    except Exception as e:  # noqa: BLE001 - profiling is observability: never block collection on it
        log.warning("pyroscope agent not started: %s", e)
        return None
    log.info("pyroscope: pushing CPU profiles of %s to %s every %ds (%d Hz)", app, config.pyroscope_url, upload, hz)

    def stop() -> None:
        try:
            pyroscope.shutdown()
        except Exception as e:  # noqa: BLE001
            log.warning("pyroscope agent shutdown: %s", e)
    return stop
