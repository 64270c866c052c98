"""Run statuses and log levels, as both sides of the API name them."""

from __future__ import annotations

RUN_STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CRASHED")
#: the statuses a trainer may end a run with
FINAL_STATUSES = ("COMPLETED", "FAILED", "CRASHED")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


def final_status(status: object) -> str:
    """`status` upper-cased when it is one a run can end with; ValueError otherwise."""
    name = str(status).upper()
    if name not in FINAL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}")
    return name


def log_level(level: str | int) -> str:
    """One of the five level names: a `logging` number maps to the nearest one below it; unknown names to INFO."""
    if isinstance(level, int):
        return LOG_LEVELS[max(0, min(4, level // 10 - 1))]
    name = str(level).upper()
    name = _LEVEL_ALIASES.get(name, name)
    return name if name in LOG_LEVELS else "INFO"
