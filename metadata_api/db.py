"""Engine and sessions (SQLite or PostgreSQL), UTC timestamps, and the exact encoding of metric values.

SQLite: WAL journal, `busy_timeout`, `foreign_keys=ON`. Transactions are opened by SQLAlchemy, not by
pysqlite: sessions made by `write_sessions` start with `BEGIN IMMEDIATE` (the write lock is taken, with the busy
timeout, before anything is read, so concurrent writers queue instead of failing with "database is locked"),
read sessions with a plain `BEGIN` (WAL readers never block).

Metric values: a point is stored as `value` (a finite float, or NULL) plus `special` (0 finite, 1 NaN,
2 +Inf, 3 -Inf). SQLite turns NaN into NULL and PostgreSQL orders NaN above every number, so keeping
non-finite values out of `value` makes MIN/MAX/AVG in SQL mean the same on both databases and keeps
NaN/+Inf/-Inf exact on both: `encode_value` / `decode_value` are the only way in and out.
Finite values round-trip bit for bit (IEEE double on both), except that SQLite stores -0.0 as 0.0.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

SPECIAL_FINITE, SPECIAL_NAN, SPECIAL_POS_INF, SPECIAL_NEG_INF = 0, 1, 2, 3
_WRITE_OPTION = "trainmon_write"
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6  # primary result codes (the low byte of an extended code)


def encode_value(value: float) -> tuple[float | None, int]:
    """(value column, special column) for a float; non-finite values go to `special`."""
    if math.isnan(value):
        return None, SPECIAL_NAN
    if math.isinf(value):
        return None, SPECIAL_POS_INF if value > 0 else SPECIAL_NEG_INF
    return value, SPECIAL_FINITE


def decode_value(value: float | None, special: int) -> float:
    """The float a (value, special) pair stores."""
    if special == SPECIAL_NAN:
        return math.nan
    if special == SPECIAL_POS_INF:
        return math.inf
    if special == SPECIAL_NEG_INF:
        return -math.inf
    if value is None:
        raise ValueError("finite metric point without a value")
    return float(value)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite keeps naive text; it is read back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def make_engine(database_url: str, busy_timeout_ms: int = 30_000, echo: bool = False) -> Engine:
    """An engine for `database_url` with the pragmas and transaction handling described above."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, echo=echo,
                               connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    return create_engine(database_url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that only read (plain BEGIN)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def for_writes(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions start with BEGIN IMMEDIATE on SQLite."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def write_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that write (BEGIN IMMEDIATE on SQLite; the same as reads on PostgreSQL)."""
    return sessionmaker(bind=for_writes(engine), expire_on_commit=False)


def is_retryable(error: Exception) -> bool:
    """Whether a database error is transient, so that the same request may succeed later: SQLite busy/locked
    (the busy timeout ran out), any PostgreSQL `OperationalError` (server unreachable or restarting, lock or
    statement timeout, serialization failure, deadlock, too many connections), a dropped connection, or a full
    connection pool. Anything else (schema missing, bad SQL, constraint) is not."""
    if isinstance(error, exc.TimeoutError):  # no pooled connection became free in time
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, exc.OperationalError):
        return False
    cause = error.orig
    if type(cause).__module__.split(".")[0] != "sqlite3":
        return True
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    message = str(cause).lower()
    return "locked" in message or "busy" in message
