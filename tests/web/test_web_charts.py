"""The run page's charts in real Chromium: what each chart holds is what the API answers for its width (count and
values, NaN/±Inf included, drawn as markers); a one-step spike at an off-grid step of a 1M-step series is in the
first paint and still there after a zoom (a mouse drag) refetches the range; a narrow zoom shows every point; the
controls live in the query string; a run with 1,000 keys mounts only the charts in view."""

from __future__ import annotations

import math

import requests
from web_support import (
    LONG_RUN,
    PROJECT,
    SPIKE_STEP,
    SPIKE_VALUE,
    Dashboard,
    chart_data,
    decode,
    long_value,
    same_values,
)


def api_series(dashboard: Dashboard, run_id: str, key: str, **params: int) -> dict:
    return dashboard.get(f"/api/runs/{run_id}/metrics/{key}", **params)


def test_charts_hold_exactly_what_the_api_answers_for_their_width(dashboard: Dashboard, page,  # noqa: ANN001
                                                                   console_errors: list[str]) -> None:
    page.goto(f"{dashboard.url}/runs/r-sgd?project={PROJECT}")
    for key in ("train_loss", "train_acc", "val_loss", "gpu_util"):
        chart = chart_data(page, key)
        assert chart["maxPoints"] == 4 * chart["width"]
        body = api_series(dashboard, "r-sgd", key, max_points=chart["maxPoints"])
        [series] = chart["series"]
        assert series["steps"] == [p["step"] for p in body["points"]], key
        assert same_values(series["values"], [decode(p["value"]) for p in body["points"]]), key
    loss = chart_data(page, "train_loss")["series"][0]
    assert math.isnan(loss["values"][loss["steps"].index(150)]) and loss["values"][loss["steps"].index(200)] == math.inf
    note = page.locator('figure[data-key="train_loss"] .chart-note').inner_text()
    assert "1 NaN" in note and "1 +Inf" in note  # drawn as markers, not as gaps
    assert console_errors == []


def test_a_spike_in_a_million_steps_is_in_the_first_paint_and_after_a_zoom(dashboard: Dashboard, page,  # noqa: ANN001
                                                                          console_errors: list[str]) -> None:
    page.goto(f"{dashboard.url}/runs/{LONG_RUN}?project={PROJECT}")
    first = chart_data(page, "train_loss")
    [series] = first["series"]
    assert series["reduced"] and len(series["steps"]) <= first["maxPoints"] < 10_000
    assert series["values"][series["steps"].index(SPIKE_STEP)] == SPIKE_VALUE  # first paint: the spike is there
    body = api_series(dashboard, LONG_RUN, "train_loss", max_points=first["maxPoints"])
    assert series["steps"] == [p["step"] for p in body["points"]]

    # A mouse drag over the middle of the plot: the chart refetches that step range.
    box = page.locator('figure[data-key="train_loss"] .u-over').bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.45, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=5)
    page.mouse.up()
    zoomed = chart_data(page, "train_loss", zoomed=True)
    [low, high] = zoomed["ranges"][0]
    assert low < SPIKE_STEP < high and high - low < 200_000
    [inside] = zoomed["series"]
    assert inside["values"][inside["steps"].index(SPIKE_STEP)] == SPIKE_VALUE
    assert inside["steps"] == [p["step"] for p in api_series(dashboard, LONG_RUN, "train_loss",
                                                             max_points=zoomed["maxPoints"], min_step=low,
                                                             max_step=high)["points"]]

    # A range narrower than the chart's budget comes back whole: every step, at full resolution.
    page.evaluate("() => window.__trainmon.controls.train_loss.zoomTo(499500, 500500)")
    page.wait_for_function("() => { const c = window.__trainmon.charts.train_loss; "
                           "return c.ranges && c.ranges[0][0] === 499500; }")
    narrow = page.evaluate("() => window.__trainmon.charts.train_loss")["series"][0]
    assert narrow["steps"] == list(range(499_500, 500_501)) and not narrow["reduced"]
    assert narrow["values"] == [long_value(step) for step in range(499_500, 500_501)]

    page.locator('figure[data-key="train_loss"] .u-over').dblclick()  # back to the whole series
    page.wait_for_function("() => window.__trainmon.charts.train_loss.zoom === null")
    assert console_errors == []


def test_controls_are_kept_in_the_query_string(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    page.goto(f"{dashboard.url}/runs/r-adam?project={PROJECT}")
    chart_data(page, "train_loss")
    page.select_option("#c-x", "relative")
    page.check("#c-log")
    page.fill("#c-keys", "loss")
    page.locator("#c-smooth").fill("0.6")
    assert "x=relative" in page.url and "log=1" in page.url and "keys=loss" in page.url and "smooth=0.6" in page.url
    page.goto(page.url)  # the shared URL shows the same view
    assert page.input_value("#c-x") == "relative" and page.is_checked("#c-log")
    assert page.locator('figure[data-key="train_acc"]').is_hidden()
    chart = chart_data(page, "train_loss")
    assert page.evaluate("() => window.__trainmon.controls.train_loss.plot.series.length") == 3  # x, raw, smoothed
    assert chart["series"][0]["steps"][0] == 0


def test_a_run_with_a_thousand_keys_mounts_only_the_charts_in_view(dashboard: Dashboard, page,  # noqa: ANN001
                                                                    console_errors: list[str]) -> None:
    url = dashboard.url
    requests.post(f"{url}/api/runs", json={"experiment": "wide", "project": PROJECT, "run_id": "wide-1000"},
                  timeout=30).raise_for_status()
    points = [{"key": f"layer{k:04d}_grad_norm", "step": s, "value": k + s / 10} for k in range(1000) for s in range(5)]
    requests.post(f"{url}/api/runs/wide-1000/metrics", params={"project": PROJECT},
                  json={"batch_id": "all", "points": points}, timeout=60).raise_for_status()
    page.goto(f"{url}/runs/wide-1000?project={PROJECT}")
    assert page.locator("figure.chart").count() == 1000
    chart_data(page, "layer0000_grad_norm")
    mounted = page.evaluate("() => Object.keys(window.__trainmon.charts).length")
    assert 0 < mounted < 60
    page.locator('figure[data-key="layer0999_grad_norm"]').scroll_into_view_if_needed()
    chart_data(page, "layer0999_grad_norm")
    assert page.evaluate("() => window.__trainmon.charts.layer0000_grad_norm") is None  # unmounted out of view
    assert page.evaluate("() => Object.keys(window.__trainmon.charts).length") < 60
    assert console_errors == []
