"""Structured JSON logs: one object per line with timestamp, level, component, experiment_id, message.

`component` is the logger name below `trainmon.` (e.g. `metadata_api.lifecycle`); `experiment_id` (and
`run_id`) come from `extra={...}` and are null when not given.

uvicorn's access log leaves out the trainers' routine writes that succeeded (`RoutineWriteFilter`) unless
LOG_LEVEL is DEBUG.

Every record goes through `RedactingFilter` (credentials masked by `trainmon.metadata_api.redact`): on the handler
`configure_logging` installs, and on every `trainmon.*` logger (`install_redaction`, also run by `create_app`), so
an embedding server's handlers get redacted records too.
"""

from __future__ import annotations

import json
import logging
import re
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


#: what each trainer rank sends all the time: metric and log batches (about one each a second) and heartbeats
_ROUTINE_WRITE = re.compile(r"^/api/runs/[^/?]+/(?:metrics|logs|heartbeat)(?:\?|$)")


class RoutineWriteFilter(logging.Filter):
    """On uvicorn's access logger: drops the line of a routine trainer write (`POST` of a run's metrics, logs or
    heartbeat) that succeeded, unless the logger is at DEBUG. 64 ranks would write about 130 such lines a second,
    and formatting them costs about 5 % of an ingest request's CPU; `trainmon_api_request_duration_seconds` counts
    them by route and status. Failed writes and every other request are logged."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:  # not uvicorn's access line: keep
            return True
        _client, method, path, _version, status = args
        if method != "POST" or not isinstance(status, int) or status >= 400 or not isinstance(path, str) \
                or not _ROUTINE_WRITE.match(path):
            return True
        return self.logger.isEnabledFor(logging.DEBUG)


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
    access = logging.getLogger("uvicorn.access")
    access.filters[:] = [existing for existing in access.filters if not isinstance(existing, RoutineWriteFilter)]
    access.addFilter(RoutineWriteFilter(access))
    install_redaction()
