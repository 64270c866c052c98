"""Bodies of what a run records besides metric points: checkpoints, artifacts, log lines and notes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from trainmon.common.files import MAX_NAME_BYTES, NAME_RULE
from trainmon.common.statuses import LOG_LEVELS

from .base import BatchId, JsonObject, Page, StrictCount, Text

#: a log line's level: one of `trainmon.common.statuses.LOG_LEVELS`
Level = Literal[LOG_LEVELS]  # type: ignore[valid-type]
ArtifactKind = Literal["image", "histogram", "graph", "file"]


# --- checkpoints ---


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # checked by the route with `check_name` (400 naming the field), so that a path in it is a 400, not a 422
    name: Text = Field(min_length=1, max_length=MAX_NAME_BYTES, description=NAME_RULE)
    step: StrictCount | None = None
    epoch: StrictCount | None = None
    uri: Text = Field(min_length=1, max_length=2048)
    size_bytes: StrictCount
    sha256: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-fA-F]{64}$")
    metrics: JsonObject | None = None  # non-finite values are stored as "NaN", "Infinity", "-Infinity"


class CheckpointOut(BaseModel):
    id: int
    run_id: str
    name: str
    step: int | None
    epoch: int | None
    uri: str
    size_bytes: int
    sha256: str
    metrics: dict[str, Any]
    created_at: datetime
    stored: bool = Field(description="its file was uploaded (`GET .../checkpoints/{id}/file` serves it)")
    path: str | None = Field(description="the stored file, relative to ARTIFACT_ROOT (null until uploaded)")


class ExperimentModels(Page[CheckpointOut]):
    experiment_id: int


# --- artifacts ---


class ArtifactOut(BaseModel):
    id: int
    run_id: str
    kind: str
    name: str
    step: int | None
    path: str
    media_type: str | None
    size_bytes: int
    sha256: str
    metadata: dict[str, Any]
    created_at: datetime


# --- log lines ---


class LogLineIn(BaseModel):
    time: datetime
    level: Level = "INFO"
    message: Text = Field(max_length=65_536)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        try:
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        except OverflowError:  # 9999-12-31T23:00:00-05:00 is past the last UTC datetime
            raise ValueError("time: out of range once converted to UTC") from None


class LogBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: BatchId
    lines: list[LogLineIn] = Field(min_length=1)


class LogLineOut(BaseModel):
    run_id: str
    time: datetime
    level: str
    message: str


class ExperimentLogs(Page[LogLineOut]):
    experiment_id: int


# --- notes ---


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1, max_length=65_536, description="at most 65536 characters and MAX_NOTE_BYTES "
                                                                  "bytes in UTF-8")


class NoteOut(BaseModel):
    id: int
    run_id: str
    text: str
    created_at: datetime
