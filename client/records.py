"""One typed record per operation the client performs against the metadata API.

A record is what waits in memory, in the spool and in `trainmon sync`: it knows its JSON form (``to_json`` /
`decode`, the spool's format: ``{"op": ..., "run_id": ..., <fields>}``), how it is sent (``send``), and how many
data points it carries (what is counted when it is dropped). Delivery (retry, spool, reject) is decided in one
place for every record: `trainmon.client.delivery`.

Adding an operation: a dataclass here with its ``op`` and ``send``, plus its public method in
`trainmon.client.methods` (see DEVELOPERS.md, "Add an SDK operation").
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from trainmon.common.wire import json_safe, new_batch_id, points_json

from .api_client import ApiClient, ApiError, quote_segment


@dataclass
class Record:
    """Base of every record: the run it belongs to; subclasses add their fields and ``send``."""

    op: ClassVar[str] = ""
    #: False for metric batches: the API makes them order-free (batch ids, last write wins per step)
    ordered: ClassVar[bool] = True
    #: True for run data that only rank 0 records (params, tags, notes, checkpoints, artifacts)
    rank0_only: ClassVar[bool] = False
    _types: ClassVar[dict[str, type[Record]]] = {}

    run_id: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.op:
            Record._types[cls.op] = cls

    @property
    def run_path(self) -> str:
        return f"/api/runs/{quote_segment(self.run_id)}"

    def point_count(self) -> int:
        """Data points this record carries (counted as dropped when it is lost); 1 for an event."""
        return 1

    def send(self, api: ApiClient) -> Any:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        data = {"op": self.op}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is not None:
                data[item.name] = value
        return data


def record_kinds() -> tuple[str, ...]:
    """The ``op`` of every kind of record."""
    return tuple(Record._types)


def decode(data: Mapping[str, Any]) -> Record:
    """The record a JSON object (from the spool) stands for; ValueError for an unknown or malformed one."""
    kind = Record._types.get(str(data.get("op")))
    if kind is None:
        raise ValueError(f"unknown record op {data.get('op')!r}")
    names = {item.name for item in dataclasses.fields(kind)}
    try:
        return kind(**{key: value for key, value in data.items() if key in names})
    except TypeError as error:
        raise ValueError(f"malformed {kind.op} record: {error}") from None


@dataclass
class RegisterRun(Record):
    """Create or join the run (``POST /api/runs``); ``body`` holds experiment, project, host, params, ..."""

    op: ClassVar[str] = "run"
    body: dict[str, Any] = field(default_factory=dict)

    def send(self, api: ApiClient) -> Any:
        return api.request("POST", "/api/runs", json_body=json_safe(self.body))


@dataclass
class SetStatus(Record):
    op: ClassVar[str] = "status"
    status: str = "COMPLETED"

    def send(self, api: ApiClient) -> Any:
        return api.request("POST", f"{self.run_path}/status", json_body={"status": self.status})


@dataclass
class MetricBatch(Record):
    """Points ``(key, step, value, wall_time)`` of one rank (or their JSON objects once read back from the
    spool; a record spooled before ranks were a field has none: rank 0)."""

    op: ClassVar[str] = "metrics"
    ordered: ClassVar[bool] = False
    batch_id: str = field(default_factory=new_batch_id)
    points: list = field(default_factory=list)
    rank: int = 0

    def point_count(self) -> int:
        return len(self.points)

    def send(self, api: ApiClient) -> Any:
        return api.request("POST", f"{self.run_path}/metrics", json_body=self.to_json_body())

    def to_json_body(self) -> dict[str, Any]:
        points = self.points
        if points and isinstance(points[0], tuple):
            points = points_json(points)
        return {"batch_id": self.batch_id, "rank": self.rank, "points": points}

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "run_id": self.run_id, **self.to_json_body()}


@dataclass
class LogBatch(Record):
    """Run log lines ``{time, level, message}``."""

    op: ClassVar[str] = "logs"
    batch_id: str = field(default_factory=new_batch_id)
    lines: list[dict[str, Any]] = field(default_factory=list)

    def send(self, api: ApiClient) -> Any:
        return api.request("POST", f"{self.run_path}/logs", json_body={"batch_id": self.batch_id, "lines": self.lines})


@dataclass
class PutParams(Record):
    """The run's whole (merged) hyperparameters."""

    op: ClassVar[str] = "params"
    rank0_only: ClassVar[bool] = True
    params: dict[str, Any] = field(default_factory=dict)

    def send(self, api: ApiClient) -> Any:
        return api.request("PUT", f"{self.run_path}/params", json_body={"params": json_safe(self.params)})


@dataclass
class AddTags(Record):
    op: ClassVar[str] = "tags"
    rank0_only: ClassVar[bool] = True
    tags: dict[str, str] = field(default_factory=dict)

    def send(self, api: ApiClient) -> Any:
        tags = {str(key): str(value) for key, value in self.tags.items()}
        return api.request("POST", f"{self.run_path}/tags", json_body={"tags": tags})


@dataclass
class AddNote(Record):
    op: ClassVar[str] = "note"
    rank0_only: ClassVar[bool] = True
    text: str = ""

    def send(self, api: ApiClient) -> Any:
        return api.request("POST", f"{self.run_path}/notes", json_body={"text": self.text})


@dataclass
class RegisterCheckpoint(Record):
    """A checkpoint file already written: ``{name, step?, epoch?, uri, size_bytes, sha256, metrics?}``; with
    ``file``, its bytes are uploaded to the API's store too (so it can be downloaded and loaded anywhere)."""

    op: ClassVar[str] = "checkpoint"
    rank0_only: ClassVar[bool] = True
    body: dict[str, Any] = field(default_factory=dict)
    file: str | None = None

    def send(self, api: ApiClient) -> Any:
        checkpoint = api.request("POST", f"{self.run_path}/checkpoints", json_body=json_safe(self.body))
        held = isinstance(checkpoint, dict) and (checkpoint.get("stored") or checkpoint.get("path"))
        if self.file is None or held or not isinstance(checkpoint, dict):
            return checkpoint  # registered by URI only, or the API holds these bytes already
        file_path = Path(self.file)
        if file_path.stat().st_size != self.body.get("size_bytes"):
            return checkpoint  # rewritten since (e.g. last.ckpt): its newer registration uploads it
        read_timeout = 30.0 + file_path.stat().st_size / 1e6  # at least 1 MB/s
        try:
            with open(file_path, "rb") as file:
                return api.request("POST", f"{self.run_path}/checkpoints/{int(checkpoint['id'])}/file",
                                   files={"file": (file_path.name, file, "application/octet-stream")},
                                   timeout=(3.05, read_timeout))
        except ApiError as error:
            if error.status == 422 and "sha256" in error.message:
                return checkpoint  # the file changed under its name since: superseded, not refused
            raise


@dataclass
class UploadArtifact(Record):
    """A file written locally, uploaded by reference (the spool holds its path, not its bytes)."""

    op: ClassVar[str] = "artifact"
    rank0_only: ClassVar[bool] = True
    kind: str = "file"
    name: str = ""
    path: str = ""
    step: int | None = None
    metadata: dict[str, Any] | None = None

    def send(self, api: ApiClient) -> Any:
        file_path = Path(self.path)
        form: dict[str, str] = {"kind": self.kind, "name": self.name}
        if self.step is not None:
            form["step"] = str(self.step)
        if self.metadata is not None:
            form["metadata"] = json.dumps(json_safe(self.metadata), allow_nan=False)
        content_type = mimetypes.guess_type(file_path.name)[0] or "application/octet-stream"
        read_timeout = 30.0 + file_path.stat().st_size / 1e6  # a large file takes longer than a batch (>= 1 MB/s)
        with open(file_path, "rb") as file:
            return api.request("POST", f"{self.run_path}/artifacts", data=form,
                               files={"file": (file_path.name, file, content_type)}, timeout=(3.05, read_timeout))
