"""What every integration shares: the monitor (given, or created on first use), experiment names, JSON-safe
hyperparameters, and checkpoint files registered once each.

Finishing: a monitor the integration created is finished by it: FAILED as soon as the framework reports a failure,
COMPLETED at the end of training with ``finish_on_end=True``, otherwise when the process exits (or on
``finish()``), so that an evaluation after training (``trainer.test()``, ``trainer.evaluate()``,
``model.evaluate()``) is still recorded. A monitor you pass is yours: the integration never finishes it.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainmon.common.files import MAX_NAME_BYTES, check_name
from trainmon.exporter import TrainingMonitor

log = logging.getLogger("trainmon.integrations")

MAX_PARAM_DEPTH = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


def safe_name(text: object, fallback: str) -> str:
    """`text` as an experiment name the API accepts (one plain file name), else `fallback`: a path keeps its
    last component, other characters become '-'."""
    raw = str(text or "").strip().rstrip("/\\")
    raw = re.split(r"[/\\]", raw)[-1] if raw else ""
    name = _UNSAFE.sub("-", raw).replace("..", ".").strip(".- ")[:MAX_NAME_BYTES]
    try:
        return check_name(name)
    except ValueError:
        return fallback


def jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON: mappings, sequences, numbers, strings, None; numpy/torch scalars as numbers; dataclasses,
    namespaces and objects with ``to_dict()`` as objects; enums by value; anything else as ``str``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_PARAM_DEPTH:
        return str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item, depth + 1) for item in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)
    item = getattr(value, "item", None)  # numpy scalars, one-element tensors
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            return jsonable(item(), depth + 1)
        except Exception:  # noqa: BLE001
            return str(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        try:
            return jsonable(to_dict(), depth + 1)
        except Exception:  # noqa: BLE001
            return str(value)
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        return jsonable(vars(value), depth + 1)
    return str(value)


def numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric entries of `metrics` (numbers, numpy scalars, one-element tensors); strings and the like are
    left out rather than counted as rejected."""
    kept: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) or getattr(value, "ndim", None) == 0:
            kept[str(key)] = value
    return kept


class MonitorHolder:
    """The integration's `TrainingMonitor`: the one given, or one created on first use from keyword arguments."""

    def __init__(self, monitor: TrainingMonitor | None, name: str | None, monitor_kwargs: Mapping[str, Any],
                 finish_on_end: bool):
        self._monitor = monitor
        self.owned = monitor is None
        self.name = monitor.experiment_name if monitor is not None else name
        self.monitor_kwargs = dict(monitor_kwargs)
        self.finish_on_end = finish_on_end

    def get(self, name: str | None = None, env: Callable[[], Mapping[str, str] | None] | None = None) \
            -> TrainingMonitor:
        """The monitor, created now if needed (experiment `name` unless one was given at construction; `env`
        gives the launcher variables when the framework knows better than the environment)."""
        if self._monitor is None:
            self.name = self.name or name or "training"
            kwargs = dict(self.monitor_kwargs)
            if "env" not in kwargs and env is not None:
                derived = env()
                if derived is not None:
                    kwargs["env"] = derived
            self._monitor = TrainingMonitor(self.name, **kwargs)
        return self._monitor

    def end(self, status: str) -> None:
        """The framework says training ended with `status`: FAILED finishes an owned monitor now, COMPLETED only
        with ``finish_on_end`` (else at exit or `finish`); a given monitor is only flushed."""
        monitor = self._monitor
        if monitor is None:
            return
        if self.owned and (status != "COMPLETED" or self.finish_on_end):
            monitor.finish(status)
        elif not monitor.finished:
            monitor.flush()

    def finish(self, status: str = "COMPLETED") -> None:
        if self._monitor is not None:
            self._monitor.finish(status)

    def for_pickle(self) -> MonitorHolder:
        """A copy without the monitor (threads and sockets do not cross processes): a spawned process creates
        its own."""
        return MonitorHolder(None, self.name, self.monitor_kwargs, self.finish_on_end)


class CheckpointFiles:
    """Checkpoint files registered with `monitor.log_checkpoint(path=...)`, each version of a file once: a file
    is registered again only when it was rewritten (another size or modification time)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _version(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if os.path.isfile(path) else None

    def remember(self, paths: list[Path]) -> None:
        """Mark files present before training as seen (they are not registered)."""
        for path in paths:
            version = self._version(path)
            if version is not None:
                self.seen[str(path.resolve())] = version

    def register(self, monitor: TrainingMonitor, path: str | Path, *, name: str | None = None,
                 step: int | None = None, epoch: int | None = None,
                 metrics: Mapping[str, Any] | None = None) -> bool:
        """Register `path` unless this version of it was registered already; True when registered."""
        file = Path(path)
        version = self._version(file)
        key = str(file.resolve())
        if version is None or self.seen.get(key) == version:
            return False
        self.seen[key] = version
        try:
            monitor.log_checkpoint(safe_name(name or file.name, "checkpoint"), step=step, epoch=epoch,
                                   path=file, metrics=dict(metrics or {}))
        except Exception as error:  # noqa: BLE001 - a checkpoint that cannot be registered never stops training
            log.warning("trainmon: cannot register checkpoint %s: %s", file, error)
            return False
        return True
