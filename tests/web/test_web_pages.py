"""Each dashboard page, in real Chromium against a live API: it loads with no console error (no CSP violation, no
failed request, no uncaught exception), has no serious or critical axe-core violation, and is photographed
(`TRAINMON_SCREENSHOTS=docs/img` refreshes the documentation's pictures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from web_support import PROJECT, RANKED_RUN, Dashboard, axe_violations, chart_data

PAGES = {  # screenshot name -> (path, what must be on it)
    "dashboard-runs": ("/?metrics=val_loss&params=lr,optimizer.name", "#runs-table tbody tr[data-run-id]"),
    "dashboard-run": (f"/runs/r-sgd?project={PROJECT}", "figure.chart"),
    "dashboard-run-files": (f"/runs/r-adam?project={PROJECT}#artifacts", "figure.image-steps img"),
    "dashboard-run-ranks": (f"/runs/{RANKED_RUN}?project={PROJECT}&rank=all", "#c-rank"),
    "dashboard-compare": (f"/compare?runs=r-sgd,r-adam,r-tiny&project={PROJECT}", "#parallel-plot svg"),
    "dashboard-login": ("/login", "h1"),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_cleanly_and_is_accessible(dashboard: Dashboard, page, console_errors: list[str],  # noqa: ANN001
                                              screenshot_dir: Path, name: str, request: pytest.FixtureRequest) -> None:
    path, present = PAGES[name]
    if RANKED_RUN in path:
        request.getfixturevalue("ranked_run")  # seeded once, by the first test that needs it
    answer = page.goto(dashboard.url + path)
    assert answer is not None and answer.status == 200
    assert "content-security-policy" in answer.headers  # the strict policy the pages are written for
    page.wait_for_selector(present)
    if name in ("dashboard-run", "dashboard-compare", "dashboard-run-ranks"):
        chart_data(page, "train_loss")
    if name == "dashboard-run-files":
        page.wait_for_selector(".graph-tree details, .graph-tree .hint")
        page.locator("#artifacts").scroll_into_view_if_needed()
    page.wait_for_load_state("networkidle")
    assert console_errors == []
    violations = axe_violations(page)
    assert violations == [], violations
    if name == "dashboard-run-files":
        page.locator("#artifacts").screenshot(path=str(screenshot_dir / f"{name}.png"))
    else:
        if name == "dashboard-run-ranks":  # the charts, just below the sticky section links
            page.evaluate("() => scrollTo(0, document.getElementById('charts').offsetTop - "
                          "document.querySelector('.tabs').offsetHeight)")
        page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=False)


def test_unknown_run_is_a_404_page(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    answer = page.goto(dashboard.url + "/runs/no-such-run")
    assert answer is not None and answer.status == 404
    assert "no run" in page.locator(".error").inner_text()
