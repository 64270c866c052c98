"""``TrainmonCallback``: a Hugging Face ``transformers.TrainerCallback`` that records the run through a
`TrainingMonitor`.

    from trainmon.integrations.huggingface import TrainmonCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[TrainmonCallback()])

- metrics: every ``Trainer.log`` (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``, ``eval_loss``...: the
  Trainer's names) at ``state.global_step``, on every rank (each rank's exporter serves its own);
- params (world process zero): ``{"training_args": TrainingArguments.to_dict() (tokens redacted, plus the
  effective batch sizes), "model_config": model.config.to_dict(), "model": {"class", "parameters"}}``;
- checkpoints (world process zero): at each save, the weights files of ``<output_dir>/checkpoint-<step>``
  (``model.safetensors``, shards, ``pytorch_model.bin``, adapters; ``checkpoint_files="all"``: every file) are
  registered once each as ``checkpoint-<step>-<file>``, with the last evaluation's metrics;
- the end: ``on_train_end`` finishes the run COMPLETED with ``finish_on_end=True``; otherwise it finishes when the
  process exits (FAILED after an uncaught exception) or on ``callback.finish()``, so that ``trainer.evaluate()``
  after ``trainer.train()`` is still recorded. A ``monitor=`` you pass is never finished here.

The experiment defaults to ``args.run_name`` (its last path component), else ``huggingface``.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from trainmon.exporter import TrainingMonitor

from ._common import CheckpointFiles, MonitorHolder, jsonable, numbers, safe_name

try:
    from transformers import TrainerCallback
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError("trainmon.integrations.huggingface needs `transformers`: "
                      "pip install 'trainmon[huggingface]'") from error

__all__ = ["TrainmonCallback"]

#: weights files of a checkpoint folder (safetensors or torch, whole or sharded, full model or adapter)
WEIGHTS = re.compile(r"^(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin|pt)$")


class TrainmonCallback(TrainerCallback):
    """Hugging Face Trainer callback for trainmon. ``experiment_name`` overrides the default (``args.run_name``);
    ``monitor=`` is an existing `TrainingMonitor`; other keyword arguments are `TrainingMonitor`'s."""

    def __init__(self, experiment_name: str | None = None, *, monitor: TrainingMonitor | None = None,
                 finish_on_end: bool = False, checkpoint_files: str = "weights", **monitor_kwargs: Any):
        if checkpoint_files not in ("weights", "all"):
            raise ValueError(f"checkpoint_files must be 'weights' or 'all', got {checkpoint_files!r}")
        self._holder = MonitorHolder(monitor, safe_name(experiment_name, "huggingface") if experiment_name else None,
                                     monitor_kwargs, finish_on_end)
        self._monitor: TrainingMonitor | None = monitor
        self._checkpoint_files = checkpoint_files
        self._checkpoints = CheckpointFiles()
        self._eval_metrics: dict[str, Any] = {}
        self._params_logged = False

    @property
    def monitor(self) -> TrainingMonitor | None:
        """The `TrainingMonitor` (None until training begins, unless one was given)."""
        return self._monitor

    def _get(self, args: Any) -> TrainingMonitor:
        monitor = self._monitor
        if monitor is None:
            name = safe_name(getattr(args, "run_name", None), "huggingface")
            monitor = self._monitor = self._holder.get(name)
        return monitor

    # --- Trainer events ---

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        monitor = self._get(args)
        if state.is_world_process_zero and not self._params_logged:
            self._params_logged = True
            monitor.log_params(_params(args, model))
            if getattr(args, "output_dir", None):  # checkpoints of an earlier run (a resume) stay unregistered
                self._checkpoints.remember(_checkpoint_files(Path(args.output_dir), "all", any_step=True))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if logs:
            self._get(args).log_metrics(numbers(logs), state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        # The Trainer logs these through on_log as well; kept here for the next checkpoint's metrics.
        self._eval_metrics = numbers(metrics or {})

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        monitor = self._get(args)
        step, epoch = state.global_step, state.epoch
        folder = Path(args.output_dir or ".") / f"checkpoint-{step}"
        for path in _checkpoint_files(folder, self._checkpoint_files):
            self._checkpoints.register(monitor, path, name=f"{folder.name}-{path.name}", step=step,
                                       epoch=int(epoch) if epoch is not None else None, metrics=self._eval_metrics)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._holder.end("COMPLETED")

    def finish(self, status: str = "COMPLETED") -> None:
        """Finish the run now (idempotent)."""
        self._holder.finish(status)


def _params(args: Any, model: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    try:
        training_args = args.to_dict()  # hub tokens come back redacted
        for key in ("train_batch_size", "eval_batch_size"):
            training_args.setdefault(key, getattr(args, key, None))
    except Exception:  # noqa: BLE001 - an args object of another shape
        training_args = getattr(args, "to_sanitized_dict", dict)()
    params["training_args"] = jsonable(training_args)
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "to_dict", None)):
        params["model_config"] = jsonable(config.to_dict())
    if model is not None:
        description: dict[str, Any] = {"class": type(model).__name__}
        with contextlib.suppress(Exception):  # not a torch module
            description["parameters"] = int(sum(p.numel() for p in model.parameters()))
        params["model"] = description
    return params


def _checkpoint_files(folder: Path, which: str, any_step: bool = False) -> list[Path]:
    """The files to register of one checkpoint folder (or, `any_step`, of every checkpoint-* folder)."""
    folders = sorted(folder.glob("checkpoint-*")) if any_step else [folder]
    files: list[Path] = []
    for each in folders:
        if each.is_dir():
            files.extend(path for path in sorted(each.iterdir())
                         if path.is_file() and (which == "all" or WEIGHTS.match(path.name)))
    return files
