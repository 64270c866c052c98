"""TrainmonLogger (trainmon.integrations.lightning) with real Lightning on CPU, the real metadata API (SQLite) and
a real Prometheus: the docs' example as written, checkpoints registered once each, a run that raises, two DDP ranks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from integration_support import EXAMPLES, SCRIPTS, Api, monitor_kwargs, only_run, require, run_script, trainer_env
from support.procs import prometheus_config, run_prometheus, scrape_config
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration


def test_the_docs_example_records_metrics_params_and_checkpoints(api: Api, tmp_path: Path) -> None:
    require("lightning")
    run_script(EXAMPLES / "lightning_example.py", tmp_path, trainer_env(api, tmp_path))
    run = only_run(api, "lightning-example")
    assert run["status"] == "COMPLETED"
    assert run["params"] == {"hidden": 16, "lr": 0.05}
    assert run["context"]["packages"]["lightning"]
    assert sorted(api.series(run["run_id"], "train_loss")) == list(range(16))  # 2 epochs x 8 batches
    assert sorted(api.series(run["run_id"], "val_loss")) == [7, 15]
    assert api.series(run["run_id"], "epoch")[15] == 1
    folder = tmp_path / "lightning-example" / run["run_id"] / "checkpoints"  # <name>/<version = run id>
    files = {path.name: path for path in folder.iterdir()}
    assert set(files) == {"epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt", "last.ckpt"}
    checkpoints = {c["name"]: c for c in api.checkpoints(run["run_id"])}
    assert set(checkpoints) == set(files)
    assert checkpoints["epoch=0-step=8.ckpt"]["step"] == 8 and checkpoints["epoch=0-step=8.ckpt"]["epoch"] == 0
    assert set(checkpoints["epoch=1-step=16.ckpt"]["metrics"]) == {"val_loss"}
    for name, checkpoint in checkpoints.items():
        assert checkpoint["size_bytes"] == files[name].stat().st_size
        assert checkpoint["uri"] == files[name].resolve().as_uri()


class Failing:
    """A LightningModule factory: trains on random tensors, raises at `fail_at` (None: never)."""

    @staticmethod
    def module(fail_at: int | None = None) -> Any:
        import lightning as L
        import torch

        class Module(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.save_hyperparameters({"fail_at": fail_at, "optimizer": {"name": "sgd", "lr": 0.1}})
                self.net = torch.nn.Linear(4, 1)

            def training_step(self, batch: Any, batch_idx: int) -> Any:
                if fail_at is not None and self.global_step == fail_at:
                    raise RuntimeError("boom at step 3")
                x, y = batch
                loss = torch.nn.functional.mse_loss(self.net(x), y)
                self.log("train/loss", loss)
                return loss

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Module()

    @staticmethod
    def loader() -> Any:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)


def trainer(logger: Any, **extra: Any) -> Any:
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                     enable_model_summary=False, **extra)


def test_in_process_prometheus_sees_the_metrics_and_each_checkpoint_is_registered_once(
        api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from trainmon.integrations.lightning import TrainmonLogger

    monkeypatch.chdir(tmp_path)
    registered: Counter[tuple[str, int]] = Counter()
    original = TrainingMonitor.log_checkpoint

    def spy(self: TrainingMonitor, name: str | None = None, **kwargs: Any) -> None:
        path = Path(kwargs["path"])
        registered[(path.name, path.stat().st_mtime_ns)] += 1
        original(self, name, **kwargs)

    monkeypatch.setattr(TrainingMonitor, "log_checkpoint", spy)
    logger = TrainmonLogger("lightning-inprocess", **monitor_kwargs(api, tmp_path))
    trainer(logger, max_epochs=3, callbacks=[ModelCheckpoint(save_top_k=-1, save_last=True)]).fit(
        Failing.module(), Failing.loader())
    monitor = logger.experiment
    assert api.run(monitor.run_id)["status"] == "RUNNING"  # finished at exit or by finish(): test() could follow
    host_port = monitor.metrics_url.split("//", 1)[1].split("/", 1)[0]
    with run_prometheus(prometheus_config(scrape_config("trainer", [host_port])), tmp_path / "prom") as prometheus:
        (series,) = prometheus.wait_for('trainmon_metric_value{key="train_loss"}', timeout=60)
        assert series["metric"]["experiment"] == "lightning-inprocess"
        assert series["metric"]["run_id"] == monitor.run_id
        assert prometheus.wait_for("trainmon_step", timeout=30)[0]["value"][1] == "11"  # 3 epochs x 4 batches
    logger.finish()
    run = api.wait_status(monitor.run_id, "COMPLETED")
    assert run["params"] == {"fail_at": None, "optimizer": {"name": "sgd", "lr": 0.1}}
    assert sorted(api.series(run["run_id"], "train_loss")) == list(range(12))  # "train/loss", normalised
    assert set(registered.values()) == {1}, registered  # each saved version of each file once
    files = sorted(path.name for path in (tmp_path / "lightning-inprocess" / run["run_id"] / "checkpoints").iterdir())
    assert sorted({name for name, _ in registered}) == files
    assert sorted(c["name"] for c in api.checkpoints(run["run_id"])) == files


def test_a_run_whose_training_raises_ends_failed(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("lightning")
    from trainmon.integrations.lightning import TrainmonLogger

    monkeypatch.chdir(tmp_path)
    logger = TrainmonLogger("lightning-failing", **monitor_kwargs(api, tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        trainer(logger, max_epochs=2).fit(Failing.module(fail_at=3), Failing.loader())
    assert logger.experiment.finished
    run = api.wait_status(logger.version, "FAILED")
    assert sorted(api.series(run["run_id"], "train_loss")) == [0, 1, 2]


def test_finish_on_end_and_a_given_monitor(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("lightning")
    from trainmon.integrations.lightning import TrainmonLogger

    monkeypatch.chdir(tmp_path)
    logger = TrainmonLogger("lightning-finish-on-end", finish_on_end=True, **monitor_kwargs(api, tmp_path))
    trainer(logger, max_epochs=1).fit(Failing.module(), Failing.loader())
    assert api.wait_status(logger.version, "COMPLETED")
    with TrainingMonitor("lightning-given", **monitor_kwargs(api, tmp_path)) as monitor:
        logger = TrainmonLogger(monitor=monitor, finish_on_end=True)
        assert (logger.name, logger.version) == ("lightning-given", monitor.run_id)
        trainer(logger, max_epochs=1).fit(Failing.module(), Failing.loader())
        assert not monitor.finished  # a monitor you pass is yours to finish
    assert api.wait_status(monitor.run_id, "COMPLETED")


def test_two_ddp_ranks_share_one_run_and_register_each_checkpoint_once(api: Api, tmp_path: Path) -> None:
    require("lightning")
    run_script(SCRIPTS / "lightning_ddp.py", tmp_path, trainer_env(api, tmp_path), timeout=420)
    run = only_run(api, "lightning-ddp")
    assert run["status"] == "COMPLETED" and run["world_size"] == 2
    assert run["params"] == {"lr": 0.05}
    keys = api.keys(run["run_id"])
    assert {"train_loss", "epoch"} <= set(keys) and set(keys) == set(api.keys(run["run_id"], rank=1))
    assert api.ranks(run["run_id"]) == [0, 1]
    assert sorted(api.series(run["run_id"], "train_loss")) == sorted(api.series(run["run_id"], "train_loss", rank=1))
    files = sorted(path.name for path in (tmp_path / "lightning-ddp" / run["run_id"] / "checkpoints").iterdir())
    assert files == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]  # 64 samples per rank, batches of 16
    assert sorted(c["name"] for c in api.checkpoints(run["run_id"])) == files
    assert run["context"]["world_size"] == 2
