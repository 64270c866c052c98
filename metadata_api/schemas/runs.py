"""Bodies of runs: create (or join/resume), read, status changes, heartbeats, params, tags."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..models import NAME_LENGTH, RunStatus
from ..services.url_policy import check_exporter_url
from .base import JsonObject, Name, RunId, StrictCount, TagKey, TagValue, Text

#: largest `context` a run registration may carry, as compact JSON (the SDK keeps its own under 32 KiB)
MAX_CONTEXT_BYTES = 64 * 1024


def _bounded_context(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(f"context: {size} bytes as JSON, at most {MAX_CONTEXT_BYTES}")
    return value


#: the run's context (git state, command, versions, GPUs: trainmon.client.context), a bounded JSON object
RunContext = Annotated[JsonObject, AfterValidator(_bounded_context),
                       Field(description=f"the run's context captured at start (git, command, versions, GPUs): a "
                                         f"JSON object of at most {MAX_CONTEXT_BYTES} bytes")]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: Name
    project: Name | None = None
    run_id: RunId | None = None
    host: Text | None = Field(None, max_length=NAME_LENGTH)
    pid: StrictCount | None = None
    command: Text | None = Field(None, max_length=65_536)
    git_commit: Text | None = Field(None, max_length=64)
    rank: StrictCount | None = None
    world_size: Annotated[StrictCount, Field(ge=1)] | None = None
    exporter_url: Annotated[Text | None, AfterValidator(check_exporter_url)] = Field(  # services/url_policy.py
        None, max_length=1024, pattern=r"^https?://[^\s/]+(/\S*)?$")
    params: JsonObject | None = None
    tags: dict[TagKey, TagValue] | None = None
    context: RunContext | None = None


class EndpointOut(BaseModel):
    """One rank's exporter endpoint (what `/api/sd` gives Prometheus)."""

    rank: int
    url: str
    host: str | None
    updated_at: datetime


class RunOut(BaseModel):
    run_id: str
    experiment_id: int
    experiment: str
    project: str
    status: RunStatus
    start_time: datetime
    end_time: datetime | None
    last_heartbeat: datetime
    host: str | None
    pid: int | None
    command: str | None
    git_commit: str | None
    rank: int | None
    world_size: int | None
    exporter_url: str | None = Field(description="rank 0's exporter endpoint, or the first one registered")
    endpoints: list[EndpointOut] = Field(description="every rank's exporter endpoint, in rank order")
    params: dict[str, Any]
    tags: dict[str, str]
    context: dict[str, Any] | None = Field(None, description="the run's context captured at start, if any")


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: RunStatus


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="allow")


class ParamsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: JsonObject


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: dict[TagKey, TagValue]
