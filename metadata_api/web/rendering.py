"""Templates (Jinja2, autoescaped: every value a page shows is escaped), asset URLs and display filters."""

from __future__ import annotations

import hashlib
import math
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from . import ASSETS_PATH, STATIC_DIR, TEMPLATES_DIR


@lru_cache(maxsize=256)
def asset(name: str) -> str:
    """The URL of a static file, with a hash of its content (a new version is never served from a stale cache)."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"{ASSETS_PATH}/{name}?v={digest}"


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 04s`, `12s`; an em dash for none."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def iso(moment: datetime | None) -> str:
    """UTC ISO 8601 to the second (`2025-01-02T03:04:05Z`), for `<time datetime>` and for scripts."""
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(moment: datetime | None) -> str:
    """`2025-01-02 03:04 UTC`."""
    return "—" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def size(count: int | None) -> str:
    """Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`."""
    if count is None:
        return "—"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def number(value: Any) -> str:
    """A metric or parameter value for a table cell: floats to 6 significant digits, NaN/±Inf spelled out."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return f"{value:.6g}"
    return str(value)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return ((end or datetime.now(timezone.utc)) - start).total_seconds()


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True, undefined=StrictUndefined)
    env.globals.update(asset=asset, seconds_between=seconds_between)
    env.filters.update(duration=duration, iso=iso, when=when, size=size, number=number)
    return env


def render(request: Request, template: str, context: dict[str, Any], started: float | None = None,
           status_code: int = 200) -> HTMLResponse:
    """The page `template` with `context`; `Server-Timing: app;dur=<ms>` from `started` (time.perf_counter())."""
    html = environment().get_template(template).render(request=request, **context)
    headers = {"Cache-Control": "no-store"}
    if started is not None:
        headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return HTMLResponse(html, status_code=status_code, headers=headers)
