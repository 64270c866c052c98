"""Bodies of experiments: the listing and one experiment with a page of its runs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from .runs import RunOut


class ExperimentOut(BaseModel):
    id: int
    name: str
    project: str
    description: str | None
    created_at: datetime
    run_count: int
    runs_by_status: dict[str, int]
    last_activity: datetime | None


class ExperimentDetail(ExperimentOut):
    """The experiment with a page of its runs in start order (`run_count` runs in all)."""

    runs: list[RunOut]
    limit: int
    offset: int
