"""The compare page overlays the chosen runs on every shared key (what each series holds is what /api/compare
answers), lists only the params that differ and draws them against the final metric; the run page's files
download byte for byte, images step with a slider, histograms and the model graph are drawn; notes and tags are
added from the page."""

from __future__ import annotations

import hashlib
from pathlib import Path

from web_support import PROJECT, Dashboard, chart_data, decode, same_values

COMPARED = ["r-sgd", "r-adam", "r-tiny"]


def test_compare_overlays_every_run_on_each_shared_key(dashboard: Dashboard, page,  # noqa: ANN001
                                                       console_errors: list[str]) -> None:
    page.goto(f"{dashboard.url}/compare?runs={','.join(COMPARED)}&project={PROJECT}")
    keys = page.eval_on_selector_all("figure.chart", "figures => figures.map(f => f.dataset.key)")
    assert sorted(keys) == ["gpu_util", "train_acc", "train_loss", "val_loss"]
    chart = chart_data(page, "train_loss")
    assert [series["label"] for series in chart["series"]] == COMPARED
    answer = dashboard.get("/api/compare", runs=",".join(COMPARED), keys="train_loss", align="step",
                           max_points=chart["maxPoints"])
    for series in chart["series"]:
        [expected] = [s for s in answer["series"] if s["run_id"] == series["label"]]
        assert series["steps"] == [p["step"] for p in expected["points"]]
        assert same_values(series["values"], [decode(p["value"]) for p in expected["points"]])
    assert page.evaluate("() => window.__trainmon.controls.train_loss.plot.series.length") == 1 + len(COMPARED)
    differing = page.eval_on_selector_all("table.diff tbody th", "cells => cells.map(c => c.textContent)")
    assert differing == ["batch_size", "lr", "optimizer.momentum", "optimizer.name"]  # never a param all share
    assert page.locator("#parallel-plot polyline").count() == len(COMPARED)
    assert page.locator("#parallel-plot text", has_text="val_loss (final)").count() == 1
    page.select_option("#c-x", "relative")  # aligned by time since each run's first point
    page.wait_for_function("() => window.__trainmon.charts.train_loss.points > 0")
    assert console_errors == []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_download_byte_for_byte_and_are_drawn(dashboard: Dashboard, page,  # noqa: ANN001
                                                    console_errors: list[str]) -> None:
    page.goto(f"{dashboard.url}/runs/r-adam?project={PROJECT}")
    checkpoint: Path = dashboard.files["checkpoint"]
    row = page.locator("#checkpoints tbody tr", has_text=checkpoint.name)
    assert row.locator("code.sha").get_attribute("title") == sha256(checkpoint.read_bytes())
    with page.expect_download() as download:
        row.locator("a", has_text="Download").click()
    assert Path(download.value.path()).read_bytes() == checkpoint.read_bytes()

    image = page.locator('figure.image-steps[data-name="samples.png"]')
    page.wait_for_function("() => { const i = document.querySelector('figure.image-steps img'); "
                           "return i.complete && i.naturalWidth > 0; }")
    assert "step 2" in image.locator(".image-step").inner_text()
    image.locator("input.image-slider").fill("0")
    assert "step 0" in image.locator(".image-step").inner_text()
    source = image.locator("img").get_attribute("src")
    body = page.request.get(dashboard.url + source).body()
    assert body == dashboard.files["image-0"].read_bytes()  # the image file, byte for byte

    page.wait_for_function("() => document.querySelector('.histogram-range').textContent.includes('steps 0 to 4')")
    painted = page.evaluate("() => { const c = document.querySelector('figure.histogram canvas'); "
                            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; "
                            "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }")
    assert painted > 1000  # the heatmap is drawn
    tree = page.locator(".graph-tree")
    if tree.count():
        page.wait_for_selector(".graph-tree details summary")
        assert "Sequential" in tree.locator("summary").first.inner_text()
        assert tree.locator(".leaf").count() == 3
    files = page.locator("#artifacts table tbody tr")
    for index in range(files.count()):
        link = files.nth(index).locator("a")
        with page.expect_download() as download:
            link.click()
        data = Path(download.value.path()).read_bytes()
        assert sha256(data) == files.nth(index).locator("code.sha").get_attribute("title")
    assert console_errors == []


def test_notes_and_tags_are_added_from_the_page(dashboard: Dashboard, page,  # noqa: ANN001
                                                console_errors: list[str]) -> None:
    page.goto(f"{dashboard.url}/runs/r-tiny?project={PROJECT}")
    page.fill("#note-text", "diverged: <b>lr</b> too small & loss flat")
    page.click("#note-form button")
    page.wait_for_selector("#notes li:has-text('diverged')")
    assert page.locator("#notes b").count() == 0  # text, never HTML
    page.fill("#tag-key", "verdict")
    page.fill("#tag-value", "discard")
    page.click("#tag-form button")
    page.wait_for_selector("#tags-table th:has-text('verdict')")
    run = dashboard.get("/api/runs/r-tiny")
    assert run["tags"]["verdict"] == "discard"
    notes = dashboard.get("/api/runs/r-tiny/notes")["items"]
    assert notes[-1]["text"] == "diverged: <b>lr</b> too small & loss flat"
    page.reload()  # server-rendered, escaped
    assert page.locator("#notes li .note-text").last.inner_text() == "diverged: <b>lr</b> too small & loss flat"
    assert console_errors == []


def test_logs_filter_by_level_and_search(dashboard: Dashboard, page) -> None:  # noqa: ANN001
    page.goto(f"{dashboard.url}/runs/r-sgd?project={PROJECT}")
    page.wait_for_selector("#log-lines li")
    assert page.locator("#log-lines li").count() == 3
    page.select_option("#log-level", "WARNING")
    page.wait_for_function("() => document.querySelectorAll('#log-lines li').length === 2")
    page.fill("#log-search", "memory")
    page.wait_for_function("() => document.querySelectorAll('#log-lines li').length === 1")
    assert "out of memory" in page.locator("#log-lines li").inner_text()
