"""gzip for the reduced views the dashboard's charts read, and nothing else.

A chart asks for 4 points per pixel of its width (`max_points`), ~2,000 to 3,000 points: as JSON that is 100 to
200 KB, gzipped a third of it (repeated field names, digits). Only GET `/api/runs/{run_id}/metrics/{key}` and
`/api/compare` with `max_points` are compressed (their size is bounded by it); full-fidelity pages, ingest and
the event stream are left alone, so no large answer pays the compression's CPU time.
"""

from __future__ import annotations

import re

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Scope

CHART_PATHS = re.compile(r"^/api/(runs/[^/]+/metrics/[^/]+|compare)$")


def wants_chart_gzip(scope: Scope) -> bool:
    """Whether this request reads a chart's reduced series (the only answers compressed)."""
    return (scope["method"] == "GET" and CHART_PATHS.match(scope["path"]) is not None
            and b"max_points=" in scope.get("query_string", b""))


def chart_gzip(app: ASGIApp, minimum_size: int = 2048, compresslevel: int = 6) -> ASGIApp:
    """`app` behind gzip, for the requests `wants_chart_gzip` selects (`middleware.RequestGuard` chooses)."""
    return GZipMiddleware(app, minimum_size=minimum_size, compresslevel=compresslevel)
