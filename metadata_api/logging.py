"""Structured JSON logs: one object per line with timestamp, level, component, experiment_id, message.

`component` is the logger name below `trainmon.` (e.g. `metadata_api.lifecycle`); `experiment_id` (and
`run_id`) come from `extra={...}` and are null when not given.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

EXTRA_FIELDS = ("experiment_id", "run_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        component = record.name.removeprefix("trainmon.")
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": component,
            "experiment_id": getattr(record, "experiment_id", None),
            "message": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            entry["run_id"] = run_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send `trainmon.*` and uvicorn logs to stderr as JSON lines at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("trainmon", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
