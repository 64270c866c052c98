"""Fixtures of the dashboard tests: Debian's Chromium driven by Playwright (never a downloaded browser), a live
metadata API (`support.api.run_api`, SQLite) fed by real `TrainingMonitor`s, and a page that records console
errors.

Chromium missing: the tests skip locally and fail under CI=true (`require_binary`); `make test` installs it.
Screenshots go to `$TRAINMON_SCREENSHOTS` when set (`TRAINMON_SCREENSHOTS=docs/img` refreshes the docs' images),
else to the test's temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import require_binary
from web_support import RANKED_RUN, Dashboard, seed_dashboard, seed_ranked_run

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright launches Debian's Chromium with these arguments."""
    chromium = require_binary("chromium", "/usr/bin/chromium")
    return {**browser_type_launch_args, "executable_path": chromium, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}, "locale": "en-GB",
            "timezone_id": "UTC"}


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A live API with three finished runs, a 1M-step run and files (see `web_support`), shared by the session:
    tests add runs of their own under other ids, never change the seeded ones' series."""
    require_binary("chromium", "/usr/bin/chromium")  # before minutes of seeding
    with seed_dashboard(tmp_path_factory.mktemp("dashboard")) as board:
        yield board


@pytest.fixture(scope="session")
def ranked_run(dashboard: Dashboard) -> str:
    """The id of a finished 3-rank run of the seeded dashboard (`web_support.seed_ranked_run`), seeded once."""
    seed_ranked_run(dashboard.url)
    return RANKED_RUN


@pytest.fixture
def console_errors(page) -> list[str]:  # noqa: ANN001 - pytest-playwright's Page
    """Errors the page logs (console.error, uncaught exceptions, CSP violations, failed requests)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url} {request.failure}")
            if "/events" not in request.url else None)  # an EventSource closed by navigation is no error
    return errors


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("TRAINMON_SCREENSHOTS")
    folder = Path(wanted).resolve() if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
