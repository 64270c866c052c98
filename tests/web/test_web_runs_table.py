"""The runs page in real Chromium: filters (text, status, tag, param and metric expressions) and sorting give the
right runs in the right order, the state is the URL, and selected runs open the compare page."""

from __future__ import annotations

import pytest
import requests
from web_support import PROJECT, Dashboard

SEEDED = {"r-sgd", "r-adam", "r-tiny", "long-1m"}


def shown(page) -> list[str]:  # noqa: ANN001
    return page.eval_on_selector_all("#runs-table tbody tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)")


def seeded(ids: list[str]) -> list[str]:
    return [run_id for run_id in ids if run_id in SEEDED]  # other tests of the session add runs of their own


@pytest.mark.parametrize(("query", "expected"), [
    ("where=lr < 1e-3", ["r-tiny"]),
    ("where=lr <= 0.001 and optimizer.name = adam", ["r-tiny", "r-adam"]),  # newest first
    ("where=params.batch_size >= 64", ["r-tiny", "r-adam"]),
    ("where=val_loss < 0.3", ["r-sgd"]),  # the last value logged
    ("where=metrics.train_loss.min < 0", ["r-sgd"]),
    ("status=FAILED", ["r-tiny"]),
    ("status=COMPLETED&tag=team=vision", ["r-adam", "r-sgd"]),
    ("tag=best", ["r-adam"]),
    ("q=tiny", ["r-tiny"]),
    ("q=long", ["long-1m"]),
    ("sort=param:lr&order=asc", ["r-tiny", "r-adam", "r-sgd", "long-1m"]),  # runs without lr last
    ("sort=metric:val_loss&order=desc", ["r-tiny", "r-adam", "r-sgd", "long-1m"]),
    ("sort=run&order=asc", ["long-1m", "r-adam", "r-sgd", "r-tiny"]),
])
def test_filters_and_sort_give_the_right_runs(dashboard: Dashboard, page, query: str,  # noqa: ANN001
                                              expected: list[str]) -> None:
    page.goto(f"{dashboard.url}/?{query}")
    assert seeded(shown(page)) == expected, page.content()[:3000]


def test_the_form_writes_the_state_into_the_url_and_sorting_toggles(dashboard: Dashboard, page,  # noqa: ANN001
                                                                    console_errors: list[str]) -> None:
    page.goto(dashboard.url + "/")
    page.fill("#f-where", "lr > 0.0005")
    page.fill("#f-metrics", "val_loss")
    page.check("input[name=status][value=COMPLETED]")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/?*where=*")
    assert "status=COMPLETED" in page.url and "metrics=val_loss" in page.url and "q=" not in page.url
    assert seeded(shown(page)) == ["r-adam", "r-sgd"]
    page.click("#runs-table thead a:has-text('val_loss (last)')")
    assert seeded(shown(page)) == ["r-adam", "r-sgd"]  # descending first
    page.click("#runs-table thead a:has-text('val_loss (last)')")
    assert seeded(shown(page)) == ["r-sgd", "r-adam"]
    last = page.locator('tr[data-run-id="r-sgd"] td[data-metric="val_loss"][data-agg="last"]').inner_text()
    values = dashboard.get("/api/runs/r-sgd/metrics/val_loss", max_points=1000)["points"]
    assert float(last) == pytest.approx(values[-1]["value"], rel=1e-5)
    assert console_errors == []


def test_a_bad_expression_is_explained(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    page.goto(f"{dashboard.url}/?where=lr%20~%201")
    assert "not 'name op value'" in page.locator(".error").inner_text()


def test_selected_runs_open_the_compare_page(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    page.goto(f"{dashboard.url}/?q=r-")
    assert page.is_disabled("#compare-button")
    page.check('input[name=runs][value="r-sgd"]')
    page.check('input[name=runs][value="r-tiny"]')
    page.click("#compare-button")
    page.wait_for_url("**/compare?*")
    assert "runs=r-tiny,r-sgd" in page.url and f"project={PROJECT}" in page.url
    assert page.locator("#legend li").count() == 2


def test_pages_of_fifty(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    for index in range(60):
        requests.post(f"{dashboard.url}/api/runs", json={"experiment": "paging", "project": PROJECT,
                                                         "run_id": f"page-{index:02d}"}, timeout=10).raise_for_status()
    page.goto(f"{dashboard.url}/?q=page-&sort=run&order=asc")
    assert shown(page) == [f"page-{index:02d}" for index in range(50)]
    assert page.locator("#run-total").inner_text() == "60"
    page.click("nav.pages a[rel=next]")
    assert shown(page) == [f"page-{index:02d}" for index in range(50, 60)]
    assert "page=2" in page.url and "sort=run" in page.url
