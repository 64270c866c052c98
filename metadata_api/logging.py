"""Structured JSON logs: one object per line with timestamp, level, component, experiment_id, message.

`component` is the logger name below `trainmon.` (e.g. `metadata_api.lifecycle`); `experiment_id` (and
`run_id`) come from `extra={...}` and are null when not given.

Every record goes through `RedactingFilter` (credentials masked by `trainmon.metadata_api.redact`): on the handler
`configure_logging` installs, and on every `trainmon.*` logger (`install_redaction`, also run by `create_app`), so
an embedding server's handlers get redacted records too.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from .redact import redact

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
            entry["exception"] = record.exc_text or redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message (formatted with its arguments), traceback and stack; a record
    that needed no masking is left as it was. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format: the handler reports it as logging does
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction() -> None:
    """Put `RedactingFilter` on the `trainmon` logger and every `trainmon.*` logger created so far."""
    names = ["trainmon", *(name for name in logging.root.manager.loggerDict if name.startswith("trainmon."))]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
            logger.addFilter(RedactingFilter())


def configure_logging(level: str = "INFO") -> None:
    """Send `trainmon.*` and uvicorn logs to stderr as JSON lines at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    for name in ("trainmon", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    install_redaction()
