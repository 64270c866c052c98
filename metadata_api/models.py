"""ORM models: project -> experiment -> run, and what a run owns.

Ids: projects and experiments have integer ids. A run has an internal integer key (`runs.key`, what every
child row's `run_key` references) and its client-chosen string id (`runs.id`, shared by DDP ranks and resumes),
unique within its project only: the same run id in two projects is two runs (`deps.resolve_run` finds the
caller's). The API never shows the key; it shows `id` as `run_id`. Every child row cascades with its run.
Timestamps are UTC (`UTCDateTime`); metric `wall_time` is unix seconds as sent by the trainer. Metric values:
see `db.encode_value`. Integers a client sends (steps, epochs, pids, ranks, sizes) are BIGINT columns, but for a
point's rank (INTEGER, validated below 2**31); the server's own surrogate ids (checkpoints, artifacts, notes) are
INTEGER (at most 2**31 - 1).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from trainmon.common.statuses import RUN_STATUSES

from .db import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A 64-bit autoincrement key on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY (already 64-bit).
BigId = BigInteger().with_variant(Integer(), "sqlite")
NAME_LENGTH = 255
RUN_ID_LENGTH = 128


class RunStatus(str, enum.Enum):
    # A run's status as stored: exactly `trainmon.common.statuses.RUN_STATUSES` (checked below).
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"


if tuple(status.value for status in RunStatus) != RUN_STATUSES:
    raise RuntimeError(f"RunStatus {[s.value for s in RunStatus]} differs from common.statuses {RUN_STATUSES}")


class TokenScope(str, enum.Enum):
    READ = "read"
    WRITE = "write"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    experiments: Mapped[list[Experiment]] = relationship(back_populates="project", passive_deletes=True)


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship(back_populates="experiments")
    runs: Mapped[list[Run]] = relationship(back_populates="experiment", passive_deletes=True,
                                           order_by="Run.start_time")


class Run(Base):
    """A run: `key` is internal (children reference it), `id` the client's run id, unique per project."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("id", "project_id"),  # also the index of lookups by id alone
                      Index("ix_runs_status_last_heartbeat", "status", "last_heartbeat"))

    key: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(RUN_ID_LENGTH))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    host: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    pid: Mapped[int | None] = mapped_column(BigInteger)
    command: Mapped[str | None] = mapped_column(Text)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    rank: Mapped[int | None] = mapped_column(BigInteger)
    world_size: Mapped[int | None] = mapped_column(BigInteger)
    exporter_url: Mapped[str | None] = mapped_column(String(1024))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # git, command, versions, GPUs (0005)

    experiment: Mapped[Experiment] = relationship(back_populates="runs")
    tags: Mapped[list[RunTag]] = relationship(back_populates="run", passive_deletes=True, order_by="RunTag.key",
                                              cascade="all, delete-orphan")
    endpoints: Mapped[list[RunEndpoint]] = relationship(back_populates="run", passive_deletes=True,
                                                        order_by="RunEndpoint.rank")


class RunTag(Base):
    __tablename__ = "run_tags"

    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))

    run: Mapped[Run] = relationship(back_populates="tags")


class RunEndpoint(Base):
    """One rank's exporter endpoint (`/metrics` URL) of a run; a rank that re-registers replaces its row."""

    __tablename__ = "run_endpoints"

    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    url: Mapped[str] = mapped_column(String(1024))
    host: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    run: Mapped[Run] = relationship(back_populates="endpoints")


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MetricPoint(Base):
    """One logged value of one rank; the natural key (run_key, rank, key, step) is unique (a later value for a
    step replaces it). A series is (run, rank, key); rank 0 is the run's default view."""

    __tablename__ = "metric_points"
    __table_args__ = (
        UniqueConstraint("run_key", "rank", "key", "step", name="uq_metric_points_run_key_rank_key_step"),
    )  # no index on wall_time: retention finds old points through `MetricBlock.min_wall_time`

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # < 2**31 (schemas.MAX_RANK)
    key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float(precision=53))
    special: Mapped[int] = mapped_column(SmallInteger, default=0)
    wall_time: Mapped[float] = mapped_column(Float(precision=53))


class MetricBlock(Base):
    """Summary of one series' steps [block * 64, block * 64 + 63] (`repositories.series_blocks`): kept exact by
    ingest and retention in the transaction that changes the points; the M4 reduction reads it."""

    __tablename__ = "metric_blocks"
    __table_args__ = (Index("ix_metric_blocks_min_wall_time", "min_wall_time"), {"sqlite_with_rowid": False})

    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    min_value: Mapped[float | None] = mapped_column(Float(precision=53))  # finite values only
    max_value: Mapped[float | None] = mapped_column(Float(precision=53))
    nan_step: Mapped[int | None] = mapped_column(BigInteger)  # first step holding NaN, +Inf, -Inf
    pos_inf_step: Mapped[int | None] = mapped_column(BigInteger)
    neg_inf_step: Mapped[int | None] = mapped_column(BigInteger)
    min_wall_time: Mapped[float | None] = mapped_column(Float(precision=53))  # the oldest point's (retention)


class IngestBatch(Base):
    """A client batch id already stored for a run (`kind` = metrics or logs): a replay stores nothing."""

    __tablename__ = "ingest_batches"
    __table_args__ = (Index("ix_ingest_batches_created_at", "created_at"),)  # retention finds old records

    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    accepted: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (Index("ix_log_lines_run_key_time", "run_key", "time"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class Checkpoint(Base):
    """A registered checkpoint; `path` (relative to the artifact root) once its file was uploaded and matched
    `sha256` (`POST .../checkpoints/{id}/file`), NULL for one registered by `uri` only."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_key", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    step: Mapped[int | None] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    uri: Mapped[str] = mapped_column(String(2048))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    path: Mapped[str | None] = mapped_column(String(2048))


class Artifact(Base):
    """An uploaded file; `path` is relative to the artifact root (experiments/<id>/artifacts/...)."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_run_key_kind", "run_key", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_key: Mapped[int] = mapped_column(ForeignKey("runs.key", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    step: Mapped[int | None] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(2048))
    media_type: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A per-project API token; only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
