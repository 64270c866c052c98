"""The public SDK methods of a run (``TrainingMonitor`` inherits them): each builds one typed record
(`trainmon.client.records`) and submits it to the run's `RunRecorder` (``self.recorder``).

Adding an operation: its record class in records.py, plus its method here. Nothing else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainmon.common.files import sha256_file
from trainmon.common.statuses import log_level
from trainmon.common.wire import json_safe

from . import artifacts, checkpoints, compare
from .recorder import RunRecorder, dir_label
from .records import AddNote, AddTags, PutParams, RegisterCheckpoint, UploadArtifact

log = logging.getLogger("trainmon.client")

MAX_LOG_MESSAGE = 65_536


class RunMethods:
    """Params, tags, notes, logs, checkpoints, images, histograms, graphs and compare for one run."""

    recorder: RunRecorder

    # --- run data ---

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` (nested JSON kept) into the run's hyperparameters (rank 0 only)."""
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping, got {type(params).__name__}")
        recorder = self.recorder
        if recorder.rank == 0 and recorder.enabled:
            recorder.params.update(json_safe(params))
            recorder.submit(PutParams(recorder.run_id, dict(recorder.params)))

    def add_tag(self, key: str, value: Any) -> None:
        """Set one tag ``key=value`` on the run (rank 0 only)."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"tag key must be a non-empty string, got {key!r}")
        self.recorder.submit(AddTags(self.recorder.run_id, {key: str(value)}))

    def add_note(self, text: str) -> None:
        """Add a timestamped note to the run (rank 0 only)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a note must be a non-empty string")
        self.recorder.submit(AddNote(self.recorder.run_id, text))

    def log_text(self, line: str, level: str | int = "INFO") -> None:
        """Add one line to the run's log (every rank; prefixed with the rank when there are several)."""
        recorder = self.recorder
        if not recorder.enabled:
            return
        message = f"[rank {recorder.rank}] {line}" if recorder.world_size > 1 else str(line)
        recorder.offer_log_line({"time": datetime.now(timezone.utc).isoformat(), "level": log_level(level),
                                 "message": message[:MAX_LOG_MESSAGE]})

    def logging_handler(self, level: int = logging.INFO) -> logging.Handler:
        """A ``logging.Handler`` that sends records to the run's log."""
        return RunLogHandler(self, level)

    # --- files ---

    def save_checkpoint(self, state: Any, epoch: int | None = None, step: int | None = None,
                        metrics: Mapping[str, Any] | None = None, name: str | None = None,
                        keep_last: int | None = None) -> Path:
        """Write ``state`` atomically under ``<experiment>/checkpoints/<run>/rank<N>/`` (runs and ranks never share
        a file); register it and upload its bytes to the API (rank 0; ``upload_checkpoints``); prune."""
        name = artifacts.safe_name(name or "checkpoint", "checkpoint name")
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last must be a positive int, got {keep_last!r}")
        recorder = self.recorder
        directory = recorder.experiment_dir() / "checkpoints" / dir_label(recorder.run_id) / f"rank{recorder.rank}"
        stored = artifacts.write_checkpoint(state, directory, name, step, epoch)
        if keep_last is not None:
            artifacts.prune_checkpoints(directory, name, keep_last, keep=stored.path)
        self._register_checkpoint(stored.path.name, stored.uri, stored.size_bytes, stored.sha256, step, epoch,
                                  metrics, stored.path)
        return stored.path

    def load_checkpoint(self, run_id: str | None = None, which: str | int = "latest", *,
                        map_location: Any = "cpu") -> Any:
        """Load a checkpoint back: of ``run_id`` (default: this run), ``which`` = ``"latest"``, a step or a name.
        Read locally when the registered file is here with the registered SHA-256, else downloaded from the API
        and verified. Load only checkpoints you trust (torch/pickle files can run code)."""
        api = self.recorder.api()
        run_id = run_id or self.recorder.run_id
        found = checkpoints.find_checkpoint(api, run_id, which)
        cache = self.recorder.experiment_dir().parent / ".downloads"
        return checkpoints.load_file(checkpoints.checkpoint_file(api, run_id, found, cache), map_location)

    def log_checkpoint(self, name: str | None = None, *, step: int | None = None, epoch: int | None = None,
                       path: str | Path | None = None, metrics: Mapping[str, Any] | None = None) -> None:
        """Record a checkpoint the trainer saved itself: counted in Prometheus, and with ``path`` (an existing
        file) registered with the API under ``name`` (default: the file's name) with its size and SHA-256.
        Without a path, the run's log says which checkpoint was saved at which step."""
        if path is None:
            self._count_checkpoint()
            where = [f"{label} {value}" for label, value in (("step", step), ("epoch", epoch)) if value is not None]
            if name is not None or where:
                self.log_text(" ".join(["checkpoint", *([name] if name else []), "saved", *(["at"] if where else []),
                                        ", ".join(where)]).strip())
            return
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"log_checkpoint: no file {file}")
        name = artifacts.safe_name(name or file.name, "checkpoint name")
        self._register_checkpoint(name, file.resolve().as_uri(), file.stat().st_size, sha256_file(file), step,
                                  epoch, metrics, file)

    def _register_checkpoint(self, name: str, uri: str, size_bytes: int, sha256: str, step: int | None,
                             epoch: int | None, metrics: Mapping[str, Any] | None, file: Path) -> None:
        self._count_checkpoint()
        body = {"name": name, "step": step, "epoch": epoch, "uri": uri, "size_bytes": size_bytes,
                "sha256": sha256, "metrics": json_safe(metrics or {})}
        upload = str(file.resolve()) if self.recorder.config.upload_checkpoints else None
        self.recorder.submit(RegisterCheckpoint(self.recorder.run_id,
                                                {k: v for k, v in body.items() if v is not None}, upload))

    def _count_checkpoint(self) -> None:
        if self.recorder.on_checkpoint is not None:
            with contextlib.suppress(Exception):
                self.recorder.on_checkpoint()

    def log_image(self, name: str, image: Any, step: int | None = None) -> Path | None:
        """Store ``image`` as PNG under ``<experiment>/artifacts/`` and register it."""
        if not self.recorder.enabled:
            return None
        return self._artifact("image", name, step, ".png", artifacts.image_png(image), {"format": "png"})

    def log_histogram(self, name: str, values: Any, step: int | None = None, bins: int = 64) -> Path | None:
        """Store bins and counts of ``values`` (numpy or torch) as JSON and register them."""
        if not self.recorder.enabled:
            return None
        summary = artifacts.histogram(values, bins)
        metadata = {key: summary[key] for key in ("count", "min", "max", "mean", "nonfinite")}
        return self._artifact("histogram", name, step, ".hist.json", artifacts.json_bytes(summary), metadata)

    def log_graph(self, model: Any, input_sample: Any = None, name: str | None = None) -> Path | None:
        """Store the module tree of a torch model (shapes with ``input_sample``); ONNX too when installed."""
        if not self.recorder.enabled:
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
            self.recorder.submit(UploadArtifact(self.recorder.run_id, "file", f"{name}.onnx", str(onnx_file.path),
                                                metadata={"format": "onnx", "sha256": onnx_file.sha256}))
        return path

    def _artifact_path(self, kind: str, name: str, step: int | None, suffix: str) -> Path:
        stem = f"{name}-step{step:09d}" if step is not None else name
        recorder = self.recorder
        return (recorder.experiment_dir() / "artifacts" / dir_label(recorder.run_id) / f"rank{recorder.rank}"
                / f"{kind}s" / f"{stem}{suffix}")

    def _artifact(self, kind: str, name: str, step: int | None, suffix: str, data: bytes,
                  metadata: dict[str, Any]) -> Path:
        artifacts.safe_name(name, f"{kind} name")
        path = self._artifact_path(kind, name, step, suffix)
        stored = artifacts.write_atomic(path, lambda file: file.write(data))
        # The API keys artifacts by (name, step): the suffix keeps an image and a histogram of one name apart, and
        # rank N > 0 adds "_rank<N>" so that ranks never replace each other's files.
        rank = f"_rank{self.recorder.rank}" if self.recorder.rank else ""
        self.recorder.submit(UploadArtifact(self.recorder.run_id, kind, f"{name}{rank}{suffix}",
                                            str(stored.path.resolve()),
                                            step, {**metadata, "sha256": stored.sha256,
                                                   "size_bytes": stored.size_bytes}))
        return stored.path

    # --- queries ---

    def compare_experiments(self, names_or_ids: Iterable[str | int] | str | int,
                            keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per run of the given experiments: ``<key>.last``/``.min``/``.max`` per key, plus URLs."""
        return compare.compare_experiments(self.recorder.api(), names_or_ids, keys, self.recorder.config.grafana_url)


class RunLogHandler(logging.Handler):
    """Sends formatted log records to the run's log (``monitor.logging_handler()``)."""

    def __init__(self, run: RunMethods, level: int = logging.INFO):
        super().__init__(level)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.run.log_text(self.format(record), record.levelno)
        except Exception:  # noqa: BLE001 - logging must never raise into the trainer
            self.handleError(record)
