"""``TrainmonLogger``: a Lightning ``Logger`` that records the run through a `TrainingMonitor`.

    from trainmon.integrations.lightning import TrainmonLogger

    trainer = lightning.Trainer(logger=TrainmonLogger("mnist-mlp"), callbacks=[ModelCheckpoint(...)])

- metrics: every ``log_metrics`` call (Lightning's names, e.g. ``train_loss``, ``val_acc``, ``epoch``) at
  Lightning's step, on every rank (each rank's exporter serves its own; in the metadata API each rank's history
  is its own series, rank 0 the default view);
- hyperparameters: ``save_hyperparameters()`` of the module and data module, as the run's params (rank 0);
- checkpoints: each file a ``ModelCheckpoint`` saves is registered once, with its path, step, size, SHA-256 and
  the monitored score (rank 0, which is the only rank Lightning notifies);
- the end: ``finalize("failed")`` (training raised) finishes the run FAILED at once; success finishes it COMPLETED
  with ``finish_on_end=True``, otherwise when the process exits or on ``logger.finish()``, so that
  ``trainer.test()`` after ``trainer.fit()`` is still recorded. A ``monitor=`` you pass is never finished here.

DDP: the run id is fixed when the logger is created; processes Lightning launches (``strategy="ddp"``) inherit it
through the environment and ``ddp_spawn`` children through pickling, so all ranks join one run. Rank, local rank
and world size come from the launcher's variables, else from ``torch.distributed`` once Lightning set it up.

Works with ``lightning`` (preferred) or ``pytorch_lightning``, whichever is installed.
"""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainmon.exporter import TrainingMonitor
from trainmon.exporter.distributed import LAUNCHERS, resolve_run_id

from ._common import CheckpointFiles, MonitorHolder, jsonable, safe_name

try:
    from lightning.pytorch.loggers.logger import Logger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    FRAMEWORK = "lightning"
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning.loggers.logger import Logger
        from pytorch_lightning.utilities.rank_zero import rank_zero_only

        FRAMEWORK = "pytorch_lightning"
    except ImportError as error:
        raise ImportError("trainmon.integrations.lightning needs `lightning` or `pytorch_lightning`: "
                          "pip install 'trainmon[lightning]'") from error

__all__ = ["FRAMEWORK", "TrainmonLogger"]

#: "<pid>:<run id>" of the process that created a logger; processes it launches (Lightning's DDP) join that run
RUN_VARIABLE = "_TRAINMON_LIGHTNING_RUN"
STATUSES = {"success": "COMPLETED", "failed": "FAILED"}


class TrainmonLogger(Logger):
    """Lightning logger for trainmon. ``name`` is the experiment (default ``lightning``); ``monitor=`` an existing
    `TrainingMonitor`; other keyword arguments are `TrainingMonitor`'s (``project_name``, ``api_url``, ``port``,
    ``tags``...). ``log_graph=True`` stores the module tree (with ``example_input_array``'s shapes)."""

    def __init__(self, name: str | None = None, *, monitor: TrainingMonitor | None = None,
                 save_dir: str | Path | None = None, finish_on_end: bool = False, log_graph: bool = False,
                 **monitor_kwargs: Any):
        super().__init__()
        if monitor is not None:
            run_id = monitor.run_id
        else:
            run_id = monitor_kwargs.pop("run_id", None) or _shared_run_id()
            monitor_kwargs["run_id"] = run_id
        self._holder = MonitorHolder(monitor, safe_name(name, "lightning") if name else None, monitor_kwargs,
                                     finish_on_end)
        self._name = self._holder.name or "lightning"
        self._run_id = run_id
        self._save_dir = None if save_dir is None else os.fspath(save_dir)
        self._log_graph = log_graph
        self._monitor: TrainingMonitor | None = monitor
        self._checkpoints = CheckpointFiles()
        self._epoch: int | None = None
        self._step: int | None = None

    # --- what Lightning reads ---

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        """The run id (ModelCheckpoint's default folder is ``<save_dir>/<name>/<version>/checkpoints``)."""
        return self._run_id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def experiment(self) -> TrainingMonitor:
        """The `TrainingMonitor` (created on first use, on every rank: each rank serves its own metrics)."""
        monitor = self._monitor
        if monitor is None:
            monitor = self._monitor = self._holder.get(self._name, _launcher_env)
        return monitor

    monitor = experiment

    # --- what Lightning calls ---

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        monitor = self._monitor or self.experiment
        epoch = metrics.get("epoch")
        if epoch is not None:
            self._epoch = int(epoch)
        self._step = step
        monitor.log_metrics(metrics, step)

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        monitor = self.experiment
        if monitor.topology.rank != 0:
            return
        if isinstance(params, Namespace):
            params = vars(params)
        params = jsonable(dict(params or {}))
        if params:
            monitor.log_params(params)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        if not self._log_graph:
            return
        monitor = self.experiment
        if monitor.topology.rank == 0:
            sample = input_array if input_array is not None else getattr(model, "example_input_array", None)
            monitor.log_graph(model, sample, name=type(model).__name__)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Register the file ``ModelCheckpoint`` just saved (and any of its top-k or last files not registered
        yet): path, step, epoch, size, SHA-256, and the monitored score as the checkpoint's metrics."""
        monitor = self.experiment
        if monitor.topology.rank != 0:
            return
        just_saved = getattr(checkpoint_callback, "_last_checkpoint_saved", "") or ""
        step = getattr(checkpoint_callback, "_last_global_step_saved", None)
        step = step if isinstance(step, int) else self._step
        metrics = _score(checkpoint_callback)
        candidates = [just_saved, getattr(checkpoint_callback, "last_model_path", ""),
                      getattr(checkpoint_callback, "best_model_path", ""),
                      *dict(getattr(checkpoint_callback, "best_k_models", {}) or {})]
        for path in dict.fromkeys(str(p) for p in candidates if p):
            self._checkpoints.register(monitor, path, step=step if path == just_saved else None,
                                       epoch=self._epoch if path == just_saved else None,
                                       metrics=metrics if path == just_saved else None)

    def save(self) -> None:
        if self._monitor is not None and not self._monitor.finished:
            self._monitor.flush()

    def finalize(self, status: str) -> None:
        """Lightning's end of fit/validate/test/predict: "failed" finishes the run FAILED; "success" COMPLETED
        with ``finish_on_end``, otherwise it only flushes (the run finishes at exit or on `finish`)."""
        final = STATUSES.get(status)
        if final is None:  # "finished": a SLURM requeue; the job resumes this run
            self.save()
        else:
            self._holder.end(final)

    def finish(self, status: str = "COMPLETED") -> None:
        """Finish the run now (idempotent)."""
        self._holder.finish(status)

    # --- ddp_spawn pickles the logger into its processes: each creates its own monitor there ---

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_holder"] = self._holder.for_pickle()
        state["_monitor"] = None
        return state


def _score(checkpoint_callback: Any) -> dict[str, float]:
    key, score = getattr(checkpoint_callback, "monitor", None), getattr(checkpoint_callback, "current_score", None)
    if not key or score is None:
        return {}
    try:
        return {str(key): float(score)}
    except (TypeError, ValueError):
        return {}


def _shared_run_id() -> str:
    """The run id for a new logger: inherited from the process that launched this one (Lightning's DDP launcher
    starts ranks 1..N-1 with LOCAL_RANK set), else the usual sources (TRAINMON_RUN_ID, TORCHELASTIC_RUN_ID,
    SLURM...), else generated and left in the environment for the processes Lightning will launch."""
    inherited = os.environ.get(RUN_VARIABLE, "")
    pid, _, run_id = inherited.partition(":")
    if run_id and pid != str(os.getpid()) and os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
        return run_id
    run_id, source = resolve_run_id(None, os.environ)
    if source == "generated":
        os.environ[RUN_VARIABLE] = f"{os.getpid()}:{run_id}"
    return run_id


def _launcher_env() -> dict[str, str] | None:
    """Launcher variables for the monitor when no launcher set them (Lightning's own DDP launcher sets LOCAL_RANK
    and WORLD_SIZE only): rank and world size from torch.distributed (set up by then) or Lightning."""
    env = os.environ
    if any(env.get(rank_variable) for _, rank_variable, *_ in LAUNCHERS):
        return None
    rank, world_size = int(getattr(rank_zero_only, "rank", 0) or 0), int(env.get("WORLD_SIZE") or 1)
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        rank, world_size = distributed.get_rank(), distributed.get_world_size()
    if world_size <= 1:
        return None
    local_rank = int(env.get("LOCAL_RANK") or 0)
    local_world_size = max(int(env.get("LOCAL_WORLD_SIZE") or world_size), local_rank + 1)
    return {**env, "RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(local_world_size)}
