"""One typed record per operation the client performs against the metadata API.

A record is what waits in memory, in the spool and in `trainmon sync`: it knows its JSON form (``to_json`` /
`decode`, the spool's format: ``{"op": ..., "run_id": ..., <fields>}``), how it is sent (``send``), and how many
data points it carries (what is counted when it is dropped). Delivery (retry, spool, reject) is decided in one
place for every record: `trainmon.client.delivery`.

Adding an operation: a dataclass here with its ``op`` and ``send``, plus its public method in
`trainmon.client.methods` (see DEVELOPERS.md, "Add an SDK operation").
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import mimetypes
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from trainmon.common.wire import json_safe, new_batch_id, points_json, rows_points_json

from .api_client import ApiClient, ApiError, quote_segment

_VALUES = operator.itemgetter(2)  # a row's values


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
    """Points of one rank: ``rows`` ``(step, wall_time, {key: value})``, one per log call, values by the wire
    contract (what the shipper cuts), or ``points`` ``(key, step, value, wall_time)`` (or their JSON objects once
    read back from the spool; a record spooled before ranks were a field has none: rank 0).

    Sent as rows (``{"batch_id", "rank", "rows"}``: no object per point); an API that predates rows is sent point
    objects instead. The spool and the dead letters hold the point objects (what every version reads)."""

    op: ClassVar[str] = "metrics"
    ordered: ClassVar[bool] = False
    batch_id: str = field(default_factory=new_batch_id)
    points: list = field(default_factory=list)
    rank: int = 0
    rows: list = field(default_factory=list)
    #: the points it holds, when its maker counted them already (not part of its JSON)
    count: int | None = field(default=None, repr=False, compare=False)

    def point_count(self) -> int:
        if self.count is None:
            self.count = len(self.points) + sum(len(row[2]) for row in self.rows)
        return self.count

    def send(self, api: ApiClient) -> Any:
        limit = api.batch_limit
        if limit is not None and self.point_count() > limit:
            return self._send_parts(api, limit)
        try:
            return self._send_whole(api)
        except ApiError as error:
            if error.status != 413 or self.point_count() < 2:
                raise
        # Too large for this API (MAX_POINTS_PER_BATCH, MAX_BODY_BYTES): halves from now on, each stored once
        api.batch_limit = self.point_count() // 2
        return self._send_parts(api, api.batch_limit)

    def _send_whole(self, api: ApiClient) -> Any:
        path = f"{self.run_path}/metrics"
        if not self.rows or api.points_only:
            return api.request("POST", path, json_body=self.to_json_body())
        try:
            return api.request("POST", path, json_body=self.rows_body())
        except ApiError as error:
            if not _refuses_rows(error):
                raise
        api.points_only = True  # an API older than the rows form: point objects from now on
        return api.request("POST", path, json_body=self.to_json_body())

    def _send_parts(self, api: ApiClient, limit: int) -> dict[str, Any]:
        """Send in parts of at most `limit` points, each with a batch id of its own made from this one's and
        the part's place in it (the same parts again are the same ids: a replay stores nothing twice)."""
        answers = [part.send(api) for part in self.parts(limit)]
        return {"accepted": sum(int((answer or {}).get("accepted", 0)) for answer in answers),
                "duplicate": all((answer or {}).get("duplicate") for answer in answers)}

    def parts(self, limit: int) -> list[MetricBatch]:
        """This batch as batches of at most `limit` points, with the ids ``<batch id>:<first point>-<end>``
        (offsets in the batch first cut so: a part of a part is named like a part of the whole, so that the same
        points always travel under the same id, however they were cut before)."""
        root, offset = self.batch_id, 0
        whole, colon, span = self.batch_id.rpartition(":")
        first, dash, end = span.partition("-")
        if colon and dash and first.isdigit() and end.isdigit():
            root, offset = whole, int(first)
        parts = []
        start = offset
        for first_point in range(0, len(self.points), limit):
            chunk = self.points[first_point:first_point + limit]
            parts.append(MetricBatch(self.run_id, f"{root}:{start}-{start + len(chunk)}", chunk, self.rank,
                                     count=len(chunk)))
            start += len(chunk)
        for rows, count in split_rows(self.rows, self.point_count() - len(self.points), limit):
            parts.append(MetricBatch(self.run_id, f"{root}:{start}-{start + count}", rank=self.rank, rows=rows,
                                     count=count))
            start += count
        return parts

    def rows_body(self) -> dict[str, Any]:
        """The request body in the rows form (only rows: ``points`` go as objects)."""
        if self.points:
            return self.to_json_body()
        return {"batch_id": self.batch_id, "rank": self.rank, "rows": self.rows}

    def to_json_body(self) -> dict[str, Any]:
        """The request body with one object per point (every point, rows included)."""
        points = self.points
        if points and isinstance(points[0], tuple):
            points = points_json(points)
        if self.rows:
            points = [*points, *rows_points_json(self.rows)]
        return {"batch_id": self.batch_id, "rank": self.rank, "points": points}

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "run_id": self.run_id, **self.to_json_body()}


def split_rows(rows: list, total: int, limit: int) -> Iterator[tuple[list, int]]:
    """`rows` (holding `total` points) as consecutive batches of at most `limit` points: (rows, points) each, in
    order. A row with more than `limit` values (one call logging that many keys) is cut into rows of its step."""
    if total <= limit:
        if rows:
            yield rows, total
        return
    ends = list(itertools.accumulate(map(len, map(_VALUES, rows))))  # points up to and including each row
    start = done = 0  # the next row, the points before it
    while start < len(rows):
        stop = bisect.bisect_right(ends, done + limit, start)  # rows[start:stop] hold at most `limit` points
        if stop > start:
            yield rows[start:stop], ends[stop - 1] - done
        else:
            step, wall_time, values = rows[start]
            items = list(values.items())
            for first in range(0, len(items), limit):
                yield [(step, wall_time, dict(items[first:first + limit]))], min(limit, len(items) - first)
            stop = start + 1
        start, done = stop, ends[stop - 1]


def _refuses_rows(error: ApiError) -> bool:
    """A 422 of an API that does not know the ``rows`` field of a metric batch: ``points`` missing (its first
    error; the message may end before the next) or ``rows`` an extra field."""
    return error.status == 422 and ('"missing", "loc": ["body", "points"]' in error.message
                                    or '"extra_forbidden", "loc": ["body", "rows"]' in error.message)


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
