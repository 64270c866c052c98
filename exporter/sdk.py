"""The run-recording SDK: params, tags, notes, logs, checkpoints, images, histograms, graphs, compare, finish.

``RunRecorder`` owns the metadata side of one monitor (API client, spool, shipper); ``SdkMixin`` gives
``TrainingMonitor`` the seed's methods by delegating to ``self._sdk``. Settings come from the constructor,
then the environment (``TRAINMON_API_URL``, ``TRAINMON_API_TOKEN``, ``TRAINMON_MODE``, ``TRAINMON_SPOOL_DIR``,
``TRAINMON_CHECKPOINT_ROOT``, ``TRAINMON_GRAFANA_URL``, ``TRAINMON_FLUSH_TIMEOUT``,
``TRAINMON_HEARTBEAT_INTERVAL``), then defaults.

Modes: ``online`` (default; needs an API URL, otherwise the monitor is Prometheus-only and says so once),
``offline`` (everything goes to the spool only; upload later with ``trainmon sync``), ``disabled`` (no thread,
no spool, no network: the SDK methods are no-ops, except ``save_checkpoint`` which still writes your file).

DDP: every rank creates/joins the shared run and logs points (rank N > 0 under ``<key>_rank<N>``) and log
lines (prefixed ``[rank N]``); params,
tags, notes and checkpoint registration are rank 0's only (other ranks' calls are ignored, but
``save_checkpoint`` still writes the file it is asked for); the final status is rank 0's, except FAILED,
which any rank reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import artifacts, compare
from .api_client import ApiClient, ApiError, ApiUnavailable, json_safe
from .shipper import Shipper
from .spool import DEFAULT_MAX_BYTES, Spool, SpoolLocked

log = logging.getLogger("trainmon.exporter")

MODES = ("online", "offline", "disabled")
FINAL_STATUSES = ("COMPLETED", "FAILED", "CRASHED")
ENV_VARS = {
    "api_url": "TRAINMON_API_URL",
    "api_token": "TRAINMON_API_TOKEN",
    "mode": "TRAINMON_MODE",
    "spool_dir": "TRAINMON_SPOOL_DIR",
    "checkpoint_root": "TRAINMON_CHECKPOINT_ROOT",
    "grafana_url": "TRAINMON_GRAFANA_URL",
    "flush_timeout": "TRAINMON_FLUSH_TIMEOUT",
    "heartbeat_interval": "TRAINMON_HEARTBEAT_INTERVAL",
}


MAX_LOG_MESSAGE = 65_536
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(level: str | int) -> str:
    """One of the API's five level names (a logging level number maps to the nearest one below it)."""
    if isinstance(level, int):
        return LOG_LEVELS[max(0, min(4, level // 10 - 1))]
    name = str(level).upper()
    return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name if name in LOG_LEVELS else "INFO")


def default_spool_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "trainmon" / "spool"


@dataclass
class SdkConfig:
    """Settings of the metadata side of a monitor (see the module docstring for the environment)."""

    api_url: str | None = None
    api_token: str | None = None
    mode: str = "online"
    spool_dir: str | Path | None = None
    params: Mapping[str, Any] | None = None
    tags: Mapping[str, Any] | None = None
    resume: str | bool | None = None
    checkpoint_root: str | Path = "experiments"
    grafana_url: str = "http://127.0.0.1:3000"
    flush_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    batch_points: int = 5000
    batch_interval: float = 1.0
    queue_points: int = 100_000
    spool_max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None, **given: Any) -> SdkConfig:
        """Arguments left at None/default take the environment's value; then validate."""
        env = os.environ if env is None else env
        defaults = cls()
        values = {name: value for name, value in given.items() if value is not None}
        for name, variable in ENV_VARS.items():
            raw = env.get(variable, "").strip()
            if raw and (name not in values or values[name] == getattr(defaults, name)):
                values[name] = float(raw) if name in ("flush_timeout", "heartbeat_interval") else raw
        config = cls(**values)
        config.mode = str(config.mode).lower()
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {config.mode!r} (TRAINMON_MODE)")
        if config.api_url and not str(config.api_url).startswith(("http://", "https://")):
            raise ValueError(f"api_url must be an http(s) URL, got {config.api_url!r} (TRAINMON_API_URL)")
        if config.flush_timeout < 0:
            raise ValueError("flush_timeout must be >= 0 seconds")
        return config


def resolve_sdk_run_id(run_id: str | None, resume: str | bool | None) -> str | None:
    """``resume="<run_id>"`` continues that run; otherwise the monitor's own run id."""
    return resume if isinstance(resume, str) and resume else run_id


def chain_sinks(*sinks: Callable[[list], None] | None) -> Callable[[list], None]:
    """One point sink calling every given sink in order (None entries skipped)."""
    present = [sink for sink in sinks if sink is not None]
    if len(present) == 1:
        return present[0]

    def sink(points: list) -> None:
        for each in present:
            each(points)

    return sink


class RunRecorder:
    """The metadata side of one monitor: run lifecycle, events and points through the shipper."""

    def __init__(self, config: SdkConfig, *, experiment: str, run_id: str, project: str | None = None,
                 rank: int = 0, world_size: int = 1, host: str | None = None, exporter_url: str | None = None,
                 on_drop: Callable[[str, int], None] | None = None,
                 on_checkpoint: Callable[[], None] | None = None):
        self.config = config
        self.experiment = experiment
        self.project = project
        self.run_id = run_id
        self.rank = rank
        self.world_size = world_size
        self.experiment_id: int | None = None
        self.on_checkpoint = on_checkpoint
        self.params: dict[str, Any] = {}
        self.shipper: Shipper | None = None
        self.client: ApiClient | None = None
        self._finished = False
        online = config.mode == "online" and bool(config.api_url)
        if config.mode == "online" and not config.api_url:
            log.info("trainmon: no metadata API configured (api_url / TRAINMON_API_URL): Prometheus-only")
        if not online and config.mode != "offline":
            return
        self.params = dict(json_safe(config.params or {}))
        body = {
            "experiment": experiment, "project": project, "run_id": run_id,  # no project: the token's (or the default)
            "host": host or socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)[:65_536],
            "git_commit": _git_commit(), "rank": rank, "world_size": world_size, "exporter_url": exporter_url,
            "params": dict(self.params) or None,  # a copy: log_params updates self.params later
            "tags": {str(k): str(v) for k, v in (config.tags or {}).items()} or None,
        }
        body = {key: value for key, value in body.items() if value is not None}
        created = False
        if online:
            self.client = ApiClient(str(config.api_url), config.api_token)
            try:
                created = self._create_now(body)
            except ApiError as error:  # the API refuses this run for good: say so once, record nothing
                log.error("trainmon: the metadata API rejected run %s (%s); metadata recording is OFF for this "
                          "run (Prometheus metrics are not affected)", run_id, error)
                self.client.close()
                self.client = None
                return
        try:
            spool = _open_spool(config, run_id, rank, experiment, json_safe(body))
        except OSError as error:  # never stop the trainer: run without the metadata side, loudly
            log.warning("trainmon: cannot open a spool under %s (%s); metadata recording is OFF for this run",
                        config.spool_dir or default_spool_dir(), error)
            if self.client is not None:
                self.client.close()
            self.client = None
            return
        self.shipper = Shipper(self.client, spool, run_id, batch_points=config.batch_points,
                               batch_interval=config.batch_interval, queue_points=config.queue_points,
                               heartbeat_interval=config.heartbeat_interval, on_drop=on_drop,
                               run_body=json_safe(body))
        if not created:
            self.shipper.offer({"op": "run", "body": body})

    def _create_now(self, body: dict[str, Any]) -> bool:
        """Create (or join) the run with a short timeout, to learn the experiment id; False to queue it (API
        unreachable, slow, 5xx, 401/403); raises ApiError when the API refuses the run itself (e.g. 409, 422)."""
        assert self.client is not None
        try:
            run = self.client.request("POST", "/api/runs", json_body=json_safe(body), timeout=(1.0, 3.0))
        except (ApiError, ApiUnavailable) as error:
            if isinstance(error, ApiError) and not error.retryable and error.status not in (401, 403):
                raise
            log.warning("trainmon: cannot register run %s now (%s); it is queued and spooled", self.run_id, error)
            return False
        self.experiment_id = run.get("experiment_id") if isinstance(run, dict) else None
        return True

    @property
    def enabled(self) -> bool:
        return self.shipper is not None

    # --- points (the monitor's drain sink) ---

    def offer_points(self, points: list[tuple[str, int, float, float]]) -> None:
        """The drain's sink. Rank N > 0 stores its points under ``<key>_rank<N>`` (the API keeps one value per
        run, key and step: ranks logging the same key would overwrite each other)."""
        if self.shipper is None:
            return
        if self.rank:
            suffix = f"_rank{self.rank}"
            points = [(key + suffix, step, value, wall) for key, step, value, wall in points]
        self.shipper.offer_points(points)

    # --- run data ---

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` (nested JSON kept) into the run's hyperparameters (rank 0 only)."""
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping, got {type(params).__name__}")
        if not self._rank0_event():
            return
        self.params.update(json_safe(params))
        self._offer({"op": "params", "params": dict(self.params)})

    def add_tag(self, key: str, value: Any) -> None:
        """Set one tag ``key=value`` on the run (rank 0 only)."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"tag key must be a non-empty string, got {key!r}")
        if self._rank0_event():
            self._offer({"op": "tags", "tags": {key: str(value)}})

    def add_note(self, text: str) -> None:
        """Add a timestamped note to the run (rank 0 only)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a note must be a non-empty string")
        if self._rank0_event():
            self._offer({"op": "note", "text": text})

    def log_text(self, line: str, level: str | int = "INFO") -> None:
        """Add one line to the run's log (every rank; prefixed with the rank when there are several)."""
        if self.shipper is None:
            return
        message = f"[rank {self.rank}] {line}" if self.world_size > 1 else str(line)
        self.shipper.offer_log_line({"time": datetime.now(timezone.utc).isoformat(), "level": log_level(level),
                                     "message": message[:MAX_LOG_MESSAGE]})

    def logging_handler(self, level: int = logging.INFO) -> logging.Handler:
        """A ``logging.Handler`` that sends records to the run's log."""
        return RunLogHandler(self, level)

    # --- files ---

    def experiment_dir(self) -> Path:
        """``<checkpoint_root>/<experiment_id>`` (the experiment's name until the API told its id)."""
        label = str(self.experiment_id) if self.experiment_id is not None else _dir_label(self.experiment)
        return Path(self.config.checkpoint_root).absolute() / label

    def save_checkpoint(self, state: Any, epoch: int | None = None, step: int | None = None,
                        metrics: Mapping[str, Any] | None = None, name: str | None = None,
                        keep_last: int | None = None) -> Path:
        """Write ``state`` atomically under ``<experiment>/checkpoints/``; register it (rank 0); prune."""
        name = artifacts.safe_name(name or "checkpoint", "checkpoint name")
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last must be a positive int, got {keep_last!r}")
        directory = self.experiment_dir() / "checkpoints"
        stored = artifacts.write_checkpoint(state, directory, name, step, epoch)
        if keep_last is not None:
            artifacts.prune_checkpoints(directory, name, keep_last, keep=stored.path)
        if self.on_checkpoint is not None:
            with contextlib.suppress(Exception):
                self.on_checkpoint()
        if self._rank0_event():
            body = {"name": stored.path.name, "step": step, "epoch": epoch, "uri": stored.uri,
                    "size_bytes": stored.size_bytes, "sha256": stored.sha256, "metrics": json_safe(metrics or {})}
            self._offer({"op": "checkpoint", "body": {k: v for k, v in body.items() if v is not None}})
        return stored.path

    def log_image(self, name: str, image: Any, step: int | None = None) -> Path | None:
        """Store ``image`` as PNG under ``<experiment>/artifacts/`` and register it."""
        if self.shipper is None:
            return None
        data = artifacts.image_png(image)
        return self._artifact("image", name, step, ".png", data, {"format": "png"})

    def log_histogram(self, name: str, values: Any, step: int | None = None, bins: int = 64) -> Path | None:
        """Store bins and counts of ``values`` (numpy or torch) as JSON and register them."""
        if self.shipper is None:
            return None
        summary = artifacts.histogram(values, bins)
        metadata = {key: summary[key] for key in ("count", "min", "max", "mean", "nonfinite")}
        return self._artifact("histogram", name, step, ".hist.json", artifacts.json_bytes(summary), metadata)

    def log_graph(self, model: Any, input_sample: Any = None, name: str | None = None) -> Path | None:
        """Store the module tree of a torch model (shapes with ``input_sample``); ONNX too when installed."""
        if self.shipper is None:
            return None
        graph = artifacts.module_graph(model, input_sample)
        name = name or graph["type"]
        path = self._artifact("graph", name, None, ".graph.json", artifacts.json_bytes(graph),
                              {"parameters": graph["parameters"], "format": "module-tree"})
        try:
            onnx_file = artifacts.onnx_export(model, input_sample, self._artifact_path("graph", name, None, ".onnx"))
        except Exception as error:  # noqa: BLE001 - ONNX export is a bonus; the tree is stored anyway
            log.warning("trainmon: ONNX export of %s failed: %s", name, error)
            onnx_file = None
        if onnx_file is not None:
            self._offer({"op": "artifact", "kind": "file", "name": f"{name}.onnx", "path": str(onnx_file.path),
                         "metadata": {"format": "onnx", "sha256": onnx_file.sha256}})
        return path

    def _artifact_path(self, kind: str, name: str, step: int | None, suffix: str) -> Path:
        stem = f"{name}-step{step:09d}" if step is not None else name
        return self.experiment_dir() / "artifacts" / self.run_id / f"{kind}s" / f"{stem}{suffix}"

    def _artifact(self, kind: str, name: str, step: int | None, suffix: str, data: bytes,
                  metadata: dict[str, Any]) -> Path:
        artifacts.safe_name(name, f"{kind} name")
        stored = artifacts.write_atomic(self._artifact_path(kind, name, step, suffix), lambda file: file.write(data))
        # The API keys artifacts by (name, step): the suffix keeps an image and a histogram of one name apart.
        record = {"op": "artifact", "kind": kind, "name": f"{name}{suffix}", "path": str(stored.path.resolve()),
                  "metadata": {**metadata, "sha256": stored.sha256, "size_bytes": stored.size_bytes}}
        if step is not None:
            record["step"] = step
        self._offer(record)
        return stored.path

    # --- queries ---

    def compare_experiments(self, names_or_ids: Iterable[str | int] | str | int,
                            keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per run of the given experiments: ``<key>.last``/``.min``/``.max`` per key, plus URLs."""
        client = self.client or (ApiClient(str(self.config.api_url), self.config.api_token)
                                 if self.config.api_url else None)
        if client is None:
            raise RuntimeError("compare_experiments needs the metadata API (api_url / TRAINMON_API_URL)")
        return compare.compare_experiments(client, names_or_ids, keys, self.config.grafana_url)

    # --- lifecycle ---

    def flush(self, timeout: float = 30.0, deliver: bool = True) -> bool:
        """Wait until what was handed over so far is delivered (or, ``deliver=False``, delivered or spooled)."""
        return self.shipper is None or self.shipper.flush(timeout, deliver)

    def finish(self, status: str = "COMPLETED", timeout: float | None = None) -> bool:
        """Flush (bounded by ``timeout``, default ``flush_timeout``), set the final status, close. Idempotent.

        True when everything reached the API (or, offline, the spool)."""
        status = str(status).upper()
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}")
        if self._finished or self.shipper is None:
            self._finished = True
            return True
        self._finished = True
        if self.rank == 0 or status != "COMPLETED":
            self.shipper.offer({"op": "status", "status": status})
        delivered = self.shipper.close(self.config.flush_timeout if timeout is None else timeout)
        return delivered or self.config.mode == "offline"

    # --- helpers ---

    def _rank0_event(self) -> bool:
        if self.rank != 0:
            log.debug("trainmon: rank %d: params, tags, notes and checkpoints are recorded by rank 0", self.rank)
            return False
        return self.shipper is not None

    def _offer(self, record: dict[str, Any]) -> None:
        if self.shipper is not None and not self._finished:
            self.shipper.offer(record)


class RunLogHandler(logging.Handler):
    """Sends formatted log records to the run's log (``monitor.logging_handler()``)."""

    def __init__(self, recorder: RunRecorder, level: int = logging.INFO):
        super().__init__(level)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.recorder.log_text(self.format(record), record.levelno)
        except Exception:  # noqa: BLE001 - logging must never raise into the trainer
            self.handleError(record)


class SdkMixin:
    """The seed's SDK methods on ``TrainingMonitor`` (delegating to ``self._sdk``, a ``RunRecorder``)."""

    _sdk: RunRecorder

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._sdk.log_params(params)

    def add_tag(self, key: str, value: Any) -> None:
        self._sdk.add_tag(key, value)

    def add_note(self, text: str) -> None:
        self._sdk.add_note(text)

    def log_text(self, line: str, level: str | int = "INFO") -> None:
        self._sdk.log_text(line, level)

    def logging_handler(self, level: int = logging.INFO) -> logging.Handler:
        return self._sdk.logging_handler(level)

    def save_checkpoint(self, state: Any, epoch: int | None = None, step: int | None = None,
                        metrics: Mapping[str, Any] | None = None, name: str | None = None,
                        keep_last: int | None = None) -> Path:
        return self._sdk.save_checkpoint(state, epoch=epoch, step=step, metrics=metrics, name=name,
                                         keep_last=keep_last)

    def log_image(self, name: str, image: Any, step: int | None = None) -> Path | None:
        return self._sdk.log_image(name, image, step)

    def log_histogram(self, name: str, values: Any, step: int | None = None, bins: int = 64) -> Path | None:
        return self._sdk.log_histogram(name, values, step, bins)

    def log_graph(self, model: Any, input_sample: Any = None) -> Path | None:
        return self._sdk.log_graph(model, input_sample)

    def compare_experiments(self, names_or_ids: Iterable[str | int] | str | int,
                            keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return self._sdk.compare_experiments(names_or_ids, keys)


def _open_spool(config: SdkConfig, run_id: str, rank: int, experiment: str, run_body: dict[str, Any]) -> Spool:
    root = Path(config.spool_dir) if config.spool_dir else default_spool_dir()
    meta = {"api_url": config.api_url, "run_id": run_id, "rank": rank, "experiment": experiment,
            "created": time.time(), "run": run_body}
    name = f"{_dir_label(run_id)}-rank{rank}"
    try:
        return Spool(root / name, max_bytes=config.spool_max_bytes, meta=meta)
    except SpoolLocked:
        return Spool(root / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}", max_bytes=config.spool_max_bytes,
                     meta=meta)


def _dir_label(text: str) -> str:
    label = "".join(c if c.isalnum() or c in "_.=-" else "_" for c in str(text)).strip("._")
    return label or "run"


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2)
        if result.returncode == 0:
            return result.stdout.strip()[:64] or None
    return None
