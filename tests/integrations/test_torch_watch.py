"""watch (trainmon.integrations.torch): gradient and parameter norms and histograms of a plain PyTorch loop, and the
docs' example as written, against the real metadata API (SQLite)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from integration_support import EXAMPLES, Api, monitor_kwargs, only_run, require, run_script, trainer_env
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration


def test_the_docs_example_records_norms_histograms_and_a_checkpoint(api: Api, tmp_path: Path) -> None:
    require("torch")
    run_script(EXAMPLES / "pytorch_example.py", tmp_path, trainer_env(api, tmp_path))
    run = only_run(api, "pytorch-example")
    assert run["status"] == "COMPLETED" and run["params"] == {"lr": 0.05, "hidden": 16}
    run_id = run["run_id"]
    assert sorted(api.series(run_id, "train_loss")) == list(range(40))
    for key in ("grad_norm_total", "grad_norm_0_weight", "grad_norm_0_bias", "grad_norm_2_weight"):
        assert sorted(api.series(run_id, key)) == [0, 10, 20, 30], key
    histograms = {(a["name"], a["step"]) for a in api.artifacts(run_id, "histogram")}
    assert ("grad.0.weight.hist.json", 20) in histograms and len(histograms) == 4 * 4
    assert [c["step"] for c in api.checkpoints(run_id)] == [39]


class Loop:
    """A tiny model and its SGD loop; `run(n)` trains n steps (logging the loss at its step, from 0)."""

    def __init__(self, monitor: TrainingMonitor):
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.monitor = monitor
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.step = 0

    def run(self, steps: int) -> list[dict[str, float]]:
        torch, norms = self.torch, []
        for _ in range(steps):
            x = torch.randn(8, 4)
            loss = torch.nn.functional.mse_loss(self.model(x), x.sum(1, keepdim=True))
            self.optimizer.zero_grad()
            loss.backward()
            norms.append({name: p.grad.norm().item() for name, p in self.model.named_parameters()})
            self.optimizer.step()
            self.monitor.log_metrics({"loss": loss.item()}, self.step)
            self.step += 1
        return norms


def test_norms_match_the_gradients_and_the_handle_removes_the_hooks(api: Api, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    torch = require("torch")
    from trainmon.integrations.torch import watch

    monkeypatch.chdir(tmp_path)
    with TrainingMonitor("torch-watch", **monitor_kwargs(api, tmp_path)) as monitor:
        loop = Loop(monitor)
        handle = watch(monitor, loop.model, every=3, log="all", histograms=False)
        grads = loop.run(7)  # steps 0..6: logged at 0, 3, 6
        with torch.no_grad():
            loop.model(torch.randn(2, 4))  # inference: not a training step
        loop.model.eval()
        loop.model(torch.randn(2, 4)).sum().backward()  # eval mode: not a training step either
        loop.model.train()
        assert handle.steps == 7
        handle.remove()
        loop.run(5)  # steps 7..11: nothing logged any more
    run_id = monitor.run_id
    series = {key: api.series(run_id, key) for key in api.keys(run_id)}
    for step in (0, 3, 6):
        for name, value in grads[step].items():
            assert series[f"grad_norm_{name.replace('.', '_')}"][step] == pytest.approx(value, rel=1e-5)
        total = math.sqrt(sum(value**2 for value in grads[step].values()))
        assert series["grad_norm_total"][step] == pytest.approx(total, rel=1e-5)
    assert sorted(series["grad_norm_total"]) == [0, 3, 6]
    assert sorted(series["param_norm_total"]) == [0, 3, 6]
    assert sorted(series["loss"]) == list(range(12))
    assert api.artifacts(run_id, "histogram") == []


def test_histograms_parameters_only_and_a_step_of_your_own(api: Api, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    require("torch")
    from trainmon.integrations.torch import watch

    monkeypatch.chdir(tmp_path)
    with TrainingMonitor("torch-watch-params", **monitor_kwargs(api, tmp_path)) as monitor:
        loop = Loop(monitor)
        with watch(monitor, loop.model, every=2, log="parameters", per_parameter=False,
                   step=lambda: 100 + loop.step):
            loop.run(4)
    run_id = monitor.run_id
    keys = api.keys(run_id)
    assert "param_norm_total" in keys and not [key for key in keys if key.startswith("grad_norm")]
    assert sorted(api.series(run_id, "param_norm_total")) == [100, 102]
    assert not [key for key in keys if key.startswith("param_norm_0")]  # per_parameter=False
    names = sorted((a["name"], a["step"]) for a in api.artifacts(run_id, "histogram"))
    assert names == sorted((f"param.{p}.hist.json", s) for p in ("0.weight", "0.bias", "2.weight", "2.bias")
                           for s in (100, 102))


def test_watch_checks_its_arguments() -> None:
    torch = require("torch")
    from trainmon.integrations.torch import watch

    model: Any = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="log must be"):
        watch(None, model, log="weights")
    with pytest.raises(ValueError, match="every"):
        watch(None, model, every=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        watch(None, object())
