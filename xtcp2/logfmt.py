"""-logFormat json: one JSON object per log line, for log shippers (Loki, Elasticsearch)."""
from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    """{"ts": RFC 3339 UTC, "level", "logger", "msg"[, "exc"]}; extra= fields ride along."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out = {"ts": f"{ts}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in self._STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
