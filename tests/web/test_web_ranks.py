"""Ranks on the dashboard, in real Chromium: a run whose ranks log the same key with values of their own has a rank
picker (labelled, keyboard-usable); rank 0 is the default view, rank N draws rank N's series (and keys), `all ranks`
overlays one line per rank; live points of the chosen rank arrive in the chosen view (and a rank new to the
overlay gets its line); a single-rank run has no picker; the compare page draws the chosen ranks of each run."""

from __future__ import annotations

import requests
from web_support import (
    PROJECT,
    RANKED_STEPS,
    Dashboard,
    axe_violations,
    chart_data,
    decode,
    post_points,
    rank_value,
    same_values,
    seed_ranked_run,
)


def run_keys(page) -> list[str]:  # noqa: ANN001
    return page.eval_on_selector_all("figure.chart", "figures => figures.map(f => f.dataset.key)")


def assert_series_is_the_apis(dashboard: Dashboard, run_id: str, series: dict, key: str, rank: int,
                              max_points: int) -> None:
    body = dashboard.get(f"/api/runs/{run_id}/metrics/{key}", rank=rank, max_points=max_points)
    assert body["rank"] == rank
    assert series["steps"] == [p["step"] for p in body["points"]], (key, rank)
    assert same_values(series["values"], [decode(p["value"]) for p in body["points"]]), (key, rank)


def test_the_rank_picker_shows_one_rank_or_every_rank(dashboard: Dashboard, ranked_run: str, page,  # noqa: ANN001
                                                      console_errors: list[str]) -> None:
    page.goto(f"{dashboard.url}/runs/{ranked_run}?project={PROJECT}")
    picker = page.get_by_label("Rank", exact=True)
    assert picker.evaluate("e => e.id") == "c-rank"
    options = page.eval_on_selector_all("#c-rank option", "options => options.map(o => [o.value, o.textContent])")
    assert options == [["0", "rank 0"], ["1", "rank 1"], ["2", "rank 2"], ["all", "all ranks"]]
    assert page.input_value("#c-rank") == "0"

    # The default view: rank 0, its keys, its data (what the API answers for rank 0 at the chart's width).
    assert run_keys(page) == ["train_loss", "val_loss"]
    chart = chart_data(page, "train_loss")
    [series] = chart["series"]
    assert series["label"] == "rank 0" and series["values"][0] == rank_value(0, 0)
    assert_series_is_the_apis(dashboard, ranked_run, series, "train_loss", 0, chart["maxPoints"])

    # Rank 2, with the keyboard only; the chart controls stay as they were.
    page.check("#c-log")
    page.focus("#c-rank")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.input_value("#c-rank") == "2"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**rank=2**")
    assert "log=1" in page.url and page.is_checked("#c-log") and page.input_value("#c-rank") == "2"
    assert run_keys(page) == ["comm_wait", "train_loss"]  # rank 2's keys
    chart = chart_data(page, "train_loss")
    [series] = chart["series"]
    assert series["label"] == "rank 2" and series["values"][0] == rank_value(2, 0)
    assert_series_is_the_apis(dashboard, ranked_run, series, "train_loss", 2, chart["maxPoints"])

    # Every rank: one line per rank in each chart, the keys of every rank.
    page.select_option("#c-rank", "all")
    page.click("#rank-form button")
    page.wait_for_url("**rank=all**")
    assert run_keys(page) == ["comm_wait", "train_loss", "val_loss"]
    chart = chart_data(page, "train_loss")
    assert [s["label"] for s in chart["series"]] == ["rank 0", "rank 1", "rank 2"]
    for rank, series in enumerate(chart["series"]):
        assert_series_is_the_apis(dashboard, ranked_run, series, "train_loss", rank, chart["maxPoints"])
    assert page.evaluate("() => window.__trainmon.controls.train_loss.plot.series.length") == 4  # x and 3 lines
    colors = page.evaluate("() => window.__trainmon.controls.train_loss.plot.series.slice(1).map(s => s._stroke)")
    assert len(set(colors)) == 3
    val = chart_data(page, "val_loss")
    assert [len(s["steps"]) for s in val["series"]] == [RANKED_STEPS // 10, 0, 0]  # rank 0 alone logs it

    # Zoomed, every line is refetched over the range (a rank without the key asks for nothing).
    page.evaluate("() => window.__trainmon.controls.val_loss.zoomTo(5, 25)")
    zoomed = chart_data(page, "val_loss", zoomed=True)
    page.wait_for_function("() => window.__trainmon.charts.val_loss.series[0].steps.length === 2")
    assert page.evaluate("() => window.__trainmon.charts.val_loss.series[0].steps") == [10, 20]
    assert zoomed["ranges"][1] is None and zoomed["ranges"][2] is None

    page.select_option("#c-rank", "0")  # back to the default: the URL has no rank
    page.click("#rank-form button")
    page.wait_for_url(lambda url: "rank=" not in url and "log=1" in url)
    assert chart_data(page, "train_loss")["series"][0]["label"] == "rank 0"
    assert axe_violations(page) == []
    assert console_errors == []


def test_live_points_arrive_in_the_chosen_rank_view(dashboard: Dashboard, page,  # noqa: ANN001
                                                    console_errors: list[str]) -> None:
    run_id = "ddp-live"
    seed_ranked_run(dashboard.url, run_id, final=None)
    page.goto(f"{dashboard.url}/runs/{run_id}?project={PROJECT}&rank=2")
    assert len(chart_data(page, "train_loss")["series"][0]["steps"]) == RANKED_STEPS
    page.wait_for_function("() => window.__trainmon.eventSource.readyState === 1")
    post_points(dashboard.url, run_id, 0, "live-0", [{"key": "train_loss", "step": 1000, "value": 0.5}])
    post_points(dashboard.url, run_id, 2, "live-2", [{"key": "train_loss", "step": 1001, "value": 20.5}])
    page.wait_for_function("() => window.__trainmon.charts.train_loss.series[0].steps.includes(1001)", timeout=5_000)
    steps = page.evaluate("() => window.__trainmon.charts.train_loss.series[0].steps")
    assert 1000 not in steps  # rank 0's point is not drawn in rank 2's view

    page.goto(f"{dashboard.url}/runs/{run_id}?project={PROJECT}&rank=all")
    assert len(chart_data(page, "train_loss")["series"]) == 3
    page.wait_for_function("() => window.__trainmon.eventSource.readyState === 1")
    post_points(dashboard.url, run_id, 1, "live-1", [{"key": "train_loss", "step": 2000, "value": 10.5}])
    page.wait_for_function("() => window.__trainmon.charts.train_loss.series[1].steps.includes(2000)", timeout=5_000)
    lines = page.evaluate("() => window.__trainmon.charts.train_loss.series")
    assert [2000 in line["steps"] for line in lines] == [False, True, False]

    # A rank that starts logging while the page is open gets its line in the overlay.
    post_points(dashboard.url, run_id, 3, "live-3", [{"key": "train_loss", "step": 3000, "value": 30.5}])
    page.wait_for_function("() => window.__trainmon.charts.train_loss.series.length === 4", timeout=5_000)
    last = page.evaluate("() => window.__trainmon.charts.train_loss.series[3]")
    assert last["label"] == "rank 3" and last["steps"] == [3000] and last["values"] == [30.5]
    assert console_errors == []


def test_a_single_rank_run_has_no_picker(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    page.goto(f"{dashboard.url}/runs/r-sgd?project={PROJECT}")
    chart = chart_data(page, "train_loss")
    assert page.locator("#rank-form, #c-rank").count() == 0
    assert chart["series"][0]["label"] == "train_loss"  # labelled as before ranks existed
    assert "rank" not in page.locator("#charts-title").inner_text()


def test_a_bad_rank_is_explained(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    answer = page.goto(f"{dashboard.url}/runs/r-sgd?project={PROJECT}&rank=first")
    assert answer is not None and answer.status == 422
    assert "not a rank" in page.locator(".error").inner_text()


def test_compare_draws_the_chosen_ranks_of_each_run(dashboard: Dashboard, ranked_run: str, page,  # noqa: ANN001
                                                    console_errors: list[str]) -> None:
    runs = f"r-sgd,{ranked_run}"
    page.goto(f"{dashboard.url}/compare?runs={runs}&project={PROJECT}&ranks=all")
    assert page.input_value("#c-ranks") == "all"
    assert run_keys(page) == ["train_loss", "val_loss"]  # shared by r-sgd and some rank of ddp-3
    chart = chart_data(page, "train_loss")
    labels = [s["label"] for s in chart["series"]]
    assert labels == ["r-sgd rank 0", f"{ranked_run} rank 0", f"{ranked_run} rank 1", f"{ranked_run} rank 2"]
    answer = dashboard.get("/api/compare", runs=runs, keys="train_loss", ranks="0,1,2", align="step",
                           max_points=chart["maxPoints"])
    for series in chart["series"]:
        run_id, _, rank = series["label"].rpartition(" rank ")
        [expected] = [s for s in answer["series"] if s["run_id"] == run_id and s["rank"] == int(rank)]
        assert series["steps"] == [p["step"] for p in expected["points"]]
        assert same_values(series["values"], [decode(p["value"]) for p in expected["points"]])
    assert page.locator("#legend li", has_text=ranked_run).inner_text().endswith("ranks 0, 1, 2")

    page.fill("#c-ranks", "2, 0")  # a list: the ranks each run has, in that order
    page.click("#ranks-form button")
    page.wait_for_url("**ranks=2**")
    labels = [s["label"] for s in chart_data(page, "train_loss")["series"]]
    assert labels == ["r-sgd rank 0", f"{ranked_run} rank 2", f"{ranked_run} rank 0"]

    page.fill("#c-ranks", "two")
    page.click("#ranks-form button")
    page.wait_for_url("**ranks=two**")
    assert "not a list of ranks" in page.locator("#charts .error").inner_text()
    assert [s["label"] for s in chart_data(page, "train_loss")["series"]] == ["r-sgd", ranked_run]  # rank 0
    assert axe_violations(page) == []
    assert console_errors == []


def test_a_rank_that_logged_nothing_has_an_empty_view(dashboard: Dashboard, ranked_run: str) -> None:
    """(The server side alone.) Its view has no chart, and the picker offers it and the ranks that did log."""
    answer = requests.get(f"{dashboard.url}/runs/{ranked_run}", params={"project": PROJECT, "rank": "7"}, timeout=30)
    assert answer.status_code == 200
    assert 'value="7" selected' in answer.text and "No metrics logged yet" in answer.text


def test_the_overlay_draws_at_most_64_ranks(dashboard: Dashboard, page,  # noqa: ANN001
                                            console_errors: list[str]) -> None:
    run_id = "ddp-66"
    requests.post(f"{dashboard.url}/api/runs", json={"experiment": "ddp", "project": PROJECT, "run_id": run_id},
                  timeout=30).raise_for_status()
    for rank in range(66):
        post_points(dashboard.url, run_id, rank, f"r{rank}", [{"key": "train_loss", "step": s, "value": rank + s / 10}
                                                         for s in range(5)])
    requests.post(f"{dashboard.url}/api/runs/{run_id}/status", params={"project": PROJECT},
                  json={"status": "COMPLETED"}, timeout=30).raise_for_status()
    page.goto(f"{dashboard.url}/runs/{run_id}?project={PROJECT}&rank=all")
    assert "first 64 of 66 ranks" in page.locator("#rank-note").inner_text()
    chart = chart_data(page, "train_loss")
    assert [s["label"] for s in chart["series"]] == [f"rank {rank}" for rank in range(64)]
    assert all(line["values"] == [rank + step / 10 for step in range(5)] for rank, line in enumerate(chart["series"]))
    colors = page.evaluate("() => window.__trainmon.controls.train_loss.plot.series.slice(1).map(s => s._stroke)")
    assert len(set(colors)) == 64
    assert page.locator("#c-rank option").count() == 67  # every rank, and all ranks
    assert console_errors == []
