"""What the dashboard tests run against: a live API (SQLite) seeded by real `TrainingMonitor`s, and helpers to read
it back and to check pages (console errors, axe-core, the charts' data hook).

The seed (project `vision`):
- experiment `resnet`: `r-sgd` (lr 0.01, a NaN and a +Inf in train_loss, COMPLETED), `r-adam` (lr 0.001, tag
  best=yes, a checkpoint uploaded, images at 3 steps, histograms at 5 steps, a model graph, COMPLETED) and
  `r-tiny` (lr 0.0001, team=nlp, FAILED); 300 steps of train_loss, train_acc, gpu_util, val_loss every 10
  steps, log lines at three levels;
- experiment `scale`: `long-1m`, 1,000,000 steps of train_loss (one ingest batch of 50,000 points at a time)
  with a one-step spike of 50.0 at the off-grid step SPIKE_STEP;
- on demand (`seed_ranked_run`, the `ranked_run` fixture): experiment `ddp`, `ddp-3` (COMPLETED), whose 3 ranks log
  train_loss with values of their own (`rank_value`), rank 0 alone val_loss and the last rank alone comm_wait.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from support.api import run_api

PROJECT = "vision"
LONG_RUN = "long-1m"
LONG_STEPS = 1_000_000
SPIKE_STEP = 500_001
SPIKE_VALUE = 50.0
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
RUNS = {  # run id -> (params, tags, final status)
    "r-sgd": ({"lr": 0.01, "batch_size": 32, "optimizer": {"name": "sgd", "momentum": 0.9}}, {"team": "vision"},
              "COMPLETED"),
    "r-adam": ({"lr": 0.001, "batch_size": 64, "optimizer": {"name": "adam"}}, {"team": "vision", "best": "yes"},
               "COMPLETED"),
    "r-tiny": ({"lr": 0.0001, "batch_size": 64, "optimizer": {"name": "adam"}}, {"team": "nlp"}, "FAILED"),
}


@dataclass
class Dashboard:
    url: str
    workdir: Path
    files: dict[str, Path] = field(default_factory=dict)  # what the seed wrote: checkpoint, image

    def get(self, path: str, **params: Any) -> Any:
        answer = requests.get(self.url + path, params={"project": PROJECT, **params}, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def monitor(self, experiment: str, run_id: str, **kwargs: Any) -> Any:
        from trainmon.exporter import TrainingMonitor

        env = {"TRAINMON_CHECKPOINT_ROOT": str(self.workdir / "experiments"),
               "TRAINMON_SPOOL_DIR": str(self.workdir / "spool")}
        return TrainingMonitor(experiment, PROJECT, run_id=run_id, port=False, gpu=False, system=False,
                               api_url=self.url, handle_signals=False, env=env, **kwargs)


def loss_at(run_index: int, step: int) -> float:
    return 2.0 * math.exp(-step / (80.0 + 40 * run_index)) + 0.05 * math.sin(step / 7.0) + 0.1 * run_index


def _seed_runs(board: Dashboard) -> None:
    import numpy as np

    for index, (run_id, (params, tags, final)) in enumerate(RUNS.items()):
        monitor = board.monitor("resnet", run_id, params=params, tags=tags)
        for step in range(300):
            loss = loss_at(index, step)
            if run_id == "r-sgd" and step == 150:
                loss = math.nan
            if run_id == "r-sgd" and step == 200:
                loss = math.inf
            metrics = {"train/loss": loss, "train/acc": 1 - math.exp(-step / 90.0), "gpu/util": 0.5 + 0.4 * (step % 2)}
            if step % 10 == 0:
                metrics["val/loss"] = loss_at(index, step) + 0.05
            monitor.log_metrics(metrics, step=step)
        monitor.log_text("training started")
        monitor.log_text("loss spiked at step 150", level="WARNING")
        monitor.log_text("out of memory on rank 0", level="ERROR")
        if run_id == "r-adam":
            _seed_files(board, monitor, np)
        monitor.finish(final)


def _seed_files(board: Dashboard, monitor: Any, np: Any) -> None:
    checkpoint = monitor.save_checkpoint({"weights": list(range(1000)), "step": 300}, step=300, name="model")
    board.files["checkpoint"] = checkpoint
    rng = np.random.default_rng(7)
    for step in range(3):
        image = (rng.random((16, 16, 3)) * 255).astype("uint8")
        board.files[f"image-{step}"] = monitor.log_image("samples", image, step=step)
    for step in range(5):
        monitor.log_histogram("weights", rng.normal(step * 0.5, 1.0, 2000), step=step)
    try:
        import torch
    except ImportError:
        return
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    monitor.log_graph(model, torch.zeros(1, 8), name="mlp")


def long_value(step: int) -> float:
    return SPIKE_VALUE if step == SPIKE_STEP else 1.0 / (1.0 + step * 1e-4)


def seed_long_run(url: str, run_id: str = LONG_RUN, keys: tuple[str, ...] = ("train_loss",),
                  steps: int = LONG_STEPS, batch: int = 50_000) -> None:
    """`steps` steps of each key through the ingest API, `batch` points a request (the spike at SPIKE_STEP)."""
    session = requests.Session()
    answer = session.post(f"{url}/api/runs", json={"experiment": "scale", "project": PROJECT, "run_id": run_id},
                          timeout=30)
    assert answer.status_code in (200, 201), answer.text
    for key in keys:
        for start in range(0, steps, batch):
            points = [{"key": key, "step": step, "value": long_value(step), "wall_time": 1.7e9 + step * 0.01}
                      for step in range(start, min(steps, start + batch))]
            body = json.dumps({"batch_id": f"{key}-{start}", "points": points})
            answer = session.post(f"{url}/api/runs/{run_id}/metrics", params={"project": PROJECT}, data=body,
                                  headers={"Content-Type": "application/json"}, timeout=120)
            assert answer.status_code == 200, answer.text
    session.post(f"{url}/api/runs/{run_id}/status", params={"project": PROJECT}, json={"status": "COMPLETED"},
                 timeout=30).raise_for_status()


RANKED_RUN = "ddp-3"
RANKED_STEPS = 40


def rank_value(rank: int, step: int) -> float:
    return 10.0 * rank + 1.0 / (step + 1)


def post_points(url: str, run_id: str, rank: int, batch_id: str, points: list[dict]) -> None:
    """Points of one rank through the ingest API."""
    requests.post(f"{url}/api/runs/{run_id}/metrics", params={"project": PROJECT}, timeout=30,
                  json={"batch_id": batch_id, "rank": rank, "points": points}).raise_for_status()


def seed_ranked_run(url: str, run_id: str = RANKED_RUN, ranks: int = 3, steps: int = RANKED_STEPS,
                    final: str | None = "COMPLETED") -> None:
    """A run of experiment `ddp` with `ranks` ranks (see the module docstring), then `final` (None: still
    RUNNING); seeding twice changes nothing (the same batch ids)."""
    answer = requests.post(f"{url}/api/runs", json={"experiment": "ddp", "project": PROJECT, "run_id": run_id,
                                                    "world_size": ranks}, timeout=30)
    assert answer.status_code in (200, 201), answer.text
    for rank in range(ranks):
        points = [{"key": "train_loss", "step": step, "value": rank_value(rank, step), "wall_time": 1.7e9 + step}
                  for step in range(steps)]
        if rank == 0:
            points += [{"key": "val_loss", "step": step, "value": 0.5, "wall_time": 1.7e9 + step}
                       for step in range(0, steps, 10)]
        if rank == ranks - 1:
            points += [{"key": "comm_wait", "step": step, "value": 0.01 * step, "wall_time": 1.7e9 + step}
                       for step in range(steps)]
        post_points(url, run_id, rank, f"seed-{rank}", points)
    if final is not None:
        requests.post(f"{url}/api/runs/{run_id}/status", params={"project": PROJECT}, json={"status": final},
                      timeout=30).raise_for_status()


@contextlib.contextmanager
def seed_dashboard(workdir: Path, long_run: bool = True) -> Iterator[Dashboard]:
    with run_api(f"sqlite:///{workdir / 'trainmon.db'}", workdir) as url:
        board = Dashboard(url, workdir)
        _seed_runs(board)
        if long_run:
            seed_long_run(url)
        yield board


# --- page checks ---


def chart_data(page: Any, key: str, timeout: float = 15_000, zoomed: bool = False) -> dict:
    """What the chart of `key` holds (the page's `window.__trainmon` hook), once it has drawn."""
    page.wait_for_function("([key, zoomed]) => { const c = window.__trainmon && window.__trainmon.charts[key]; "
                           "return c && c.paints > 0 && (c.zoom !== null) === zoomed; }", arg=[key, zoomed],
                           timeout=timeout)
    return page.evaluate("(key) => window.__trainmon.charts[key]", key)


def axe_violations(page: Any) -> list[dict]:
    """Serious and critical axe-core violations of the page (axe injected through the DevTools protocol, which
    the page's Content-Security-Policy does not apply to)."""
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                           ".map(v => ({id: v.id, impact: v.impact, help: v.help, "
                           "nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def same_values(got: list, expected: list) -> bool:
    return len(got) == len(expected) and all(
        a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        for a, b in zip(got, expected, strict=True))


def decode(value: Any) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value)


def wait_for(check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
