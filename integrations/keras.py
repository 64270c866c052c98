"""``TrainmonKerasCallback``: a Keras 3 ``Callback`` that records the run through a `TrainingMonitor`.

    from trainmon.integrations.keras import TrainmonKerasCallback

    model.fit(x, y, epochs=3, callbacks=[keras.callbacks.ModelCheckpoint("ckpt/{epoch:02d}.keras"),
                                         TrainmonKerasCallback()])

- metrics: each batch's logs (Keras' running means: ``loss``, ``accuracy``...) at the global batch step (from 0
  across epochs), each epoch's logs (``val_loss``, ``val_accuracy``...) plus ``epoch`` (from 0) and
  ``learning_rate`` at the epoch's last step; ``model.evaluate()`` outside ``fit`` as ``eval_<name>``;
- params: the optimizer's config (``learning_rate``, ``weight_decay``, betas... a schedule as its config), the
  loss, ``epochs`` and ``steps_per_epoch``, and the model's name, class and parameter count;
- checkpoints: the files each ``ModelCheckpoint`` of the same ``fit`` writes, registered once each right after it
  wrote them (with the epoch, step and the epoch's logs); files there before training are left alone. The
  callbacks are found in ``fit``'s callback list; pass ``checkpoints=[...]`` to name them yourself;
- the end: ``on_train_end`` finishes the run COMPLETED with ``finish_on_end=True``; otherwise it finishes when the
  process exits (FAILED after an uncaught exception) or on ``callback.finish()``. A ``monitor=`` you pass is
  never finished here.

The experiment defaults to the model's name. Tested on the torch backend (``KERAS_BACKEND=torch``).
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainmon.exporter import TrainingMonitor

from ._common import CheckpointFiles, MonitorHolder, jsonable, numbers, safe_name

try:
    import keras
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError("trainmon.integrations.keras needs Keras 3: pip install 'trainmon[keras]'") from error

__all__ = ["TrainmonKerasCallback"]

_FIELD = re.compile(r"\{[^{}]*\}")


class TrainmonKerasCallback(keras.callbacks.Callback):
    """Keras 3 callback for trainmon. ``experiment_name`` overrides the default (the model's name); ``monitor=``
    is an existing `TrainingMonitor`; other keyword arguments are `TrainingMonitor`'s."""

    def __init__(self, experiment_name: str | None = None, *, monitor: TrainingMonitor | None = None,
                 finish_on_end: bool = False, checkpoints: Sequence[Any] | None = None,
                 log_batches: bool = True, **monitor_kwargs: Any):
        super().__init__()
        self._holder = MonitorHolder(monitor, safe_name(experiment_name, "keras") if experiment_name else None,
                                     monitor_kwargs, finish_on_end)
        self._monitor: TrainingMonitor | None = monitor
        self._explicit_checkpoints = list(checkpoints) if checkpoints is not None else None
        self._log_batches = log_batches
        self._files = CheckpointFiles()
        self._restore: list[tuple[Any, str]] = []
        self._epoch_start = 0  # global step of the current epoch's first batch
        self._last_step = -1
        self._epoch: int | None = None
        self._in_fit = False

    @property
    def monitor(self) -> TrainingMonitor | None:
        """The `TrainingMonitor` (None until training begins, unless one was given)."""
        return self._monitor

    def _get(self) -> TrainingMonitor:
        monitor = self._monitor
        if monitor is None:
            name = safe_name(getattr(self.model, "name", None), "keras")
            monitor = self._monitor = self._holder.get(name)
        return monitor

    # --- Keras events ---

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        monitor = self._get()
        if monitor.topology.rank == 0:
            monitor.log_params(self._params())
        siblings = self._explicit_checkpoints
        if siblings is None:
            siblings = _callbacks_of_caller(inspect.currentframe())
        for callback in siblings:
            if isinstance(callback, keras.callbacks.ModelCheckpoint) and monitor.topology.rank == 0:
                self._watch(callback)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._last_step = self._epoch_start + batch
        if logs and self._log_batches:
            (self._monitor or self._get()).log_metrics(logs, step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        metrics = numbers(logs or {})
        metrics["epoch"] = epoch
        if "learning_rate" not in metrics:
            rate = _learning_rate(self.model)
            if rate is not None:
                metrics["learning_rate"] = rate
        self._get().log_metrics(metrics, max(self._last_step, 0))
        self._epoch_start = self._last_step + 1

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._in_fit and logs:  # model.evaluate(); fit's validation arrives as val_* in the epoch's logs
            self._get().log_metrics({f"eval_{key}": value for key, value in numbers(logs).items()},
                                    max(self._last_step, 0))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False
        for callback, hook in self._restore:
            callback.__dict__.pop(hook, None)
        self._restore = []
        self._holder.end("COMPLETED")

    def finish(self, status: str = "COMPLETED") -> None:
        """Finish the run now (idempotent)."""
        self._holder.finish(status)

    # --- internals ---

    def _params(self) -> dict[str, Any]:
        model = self.model
        params: dict[str, Any] = {}
        fit = getattr(self, "params", None) or {}
        for key, name in (("epochs", "epochs"), ("steps", "steps_per_epoch")):
            if fit.get(key) is not None:
                params[name] = fit[key]
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            try:
                params["optimizer"] = {"class": type(optimizer).__name__, **jsonable(optimizer.get_config())}
            except Exception:  # noqa: BLE001 - a custom optimizer without a config
                params["optimizer"] = {"class": type(optimizer).__name__}
        loss = getattr(model, "loss", None)
        if loss is not None:
            params["loss"] = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)
        description: dict[str, Any] = {"name": getattr(model, "name", None), "class": type(model).__name__}
        with contextlib.suppress(Exception):  # not built yet
            description["parameters"] = int(model.count_params())
        params["model"] = description
        return jsonable(params)

    def _watch(self, callback: Any) -> None:
        """Register what `callback` (a ModelCheckpoint) writes, right after its own epoch/batch hook ran."""
        pattern = _FIELD.sub("*", str(getattr(callback, "filepath", "")))
        if not pattern:
            return
        self._files.remember([Path(path) for path in glob.glob(pattern)])
        for hook in ("on_epoch_end", "on_train_batch_end"):
            original = getattr(callback, hook)
            callback.__dict__[hook] = self._after(original, pattern, hook == "on_epoch_end")
            self._restore.append((callback, hook))

    def _after(self, original: Callable[..., Any], pattern: str, epoch_end: bool) -> Callable[..., Any]:
        def hook(index: int, logs: dict[str, Any] | None = None) -> Any:
            result = original(index, logs)
            epoch = index if epoch_end else self._epoch_or_current()
            step = max(self._last_step, 0)
            for path in sorted(glob.glob(pattern)):
                self._files.register(self._get(), path, step=step, epoch=epoch,
                                     metrics=numbers(logs or {}) if epoch_end else None)
            return result

        return hook

    def _epoch_or_current(self) -> int:
        return self._epoch + 1 if self._epoch is not None else 0


def _callbacks_of_caller(frame: Any) -> list[Any]:
    """The callbacks of the ``CallbackList`` calling ``on_train_begin`` (Keras keeps no other reference)."""
    try:
        caller = frame.f_back if frame is not None else None
        owner = caller.f_locals.get("self") if caller is not None else None
        return list(getattr(owner, "callbacks", []) or []) if isinstance(owner, keras.callbacks.CallbackList) else []
    except Exception:  # noqa: BLE001 - another Keras: no discovery, pass checkpoints=
        return []
    finally:
        del frame


def _learning_rate(model: Any) -> float | None:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - no optimizer yet, or a schedule without a value
        return None
