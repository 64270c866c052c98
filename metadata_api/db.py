"""Engine and sessions (SQLite or PostgreSQL), UTC timestamps, and the exact encoding of metric values.

SQLite: WAL journal, `busy_timeout`, `foreign_keys=ON`. Transactions are opened by SQLAlchemy, not by
pysqlite: sessions made by `write_sessions` start with `BEGIN IMMEDIATE` (the write lock is taken, with the busy
timeout, before anything is read, so concurrent writers queue instead of failing with "database is locked"),
read sessions with a plain `BEGIN` (WAL readers never block). The journal mode is persistent: a connection sets
WAL only while the file is not in WAL mode yet (a fresh database), retrying while other processes hold it.

Text neither database can store (NUL, lone surrogates) never reaches a single statement (`UnstorableText`, a 422:
the backstop behind the schemas' `Text`, for values a route or page took unchecked).

SQLite storage (`SqliteStorage`): the file's identity (st_dev, st_ino) is remembered when it is first opened.
Every transaction checks it (a deleted or replaced file would otherwise keep taking writes into an unlinked inode,
all lost at the next start), and every write transaction checks that the file is writable. Such faults, and
SQLite's own read-only, I/O, disk-full and missing-schema errors, are `storage_problem`s: the API answers 503
with a message saying what is wrong, and `/readyz` (`storage_check`: identity, free space, a committed no-op write)
stays 503 until it is fixed.

Metric values: a point is stored as `value` (a finite float, or NULL) plus `special` (0 finite, 1 NaN,
2 +Inf, 3 -Inf). SQLite turns NaN into NULL and PostgreSQL orders NaN above every number, so keeping
non-finite values out of `value` makes MIN/MAX/AVG in SQL mean the same on both databases and keeps
NaN/+Inf/-Inf exact on both: `encode_value` / `decode_value` are the only way in and out.
Finite values round-trip bit for bit (IEEE double on both), except that SQLite stores -0.0 as 0.0.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import weakref
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Engine, create_engine, event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from .transactions import DriverConnection

SPECIAL_FINITE, SPECIAL_NAN, SPECIAL_POS_INF, SPECIAL_NEG_INF = 0, 1, 2, 3
_WRITE_OPTION = "trainmon_write"
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6  # primary result codes (the low byte of an extended code)
#: SQLite primary result codes that mean the storage itself is unusable, and what to tell the client
_SQLITE_STORAGE_CODES = {8: "database is read-only", 10: "disk I/O error on the database file",
                         11: "database file is corrupt", 13: "disk full", 14: "database file cannot be opened",
                         26: "database file is not a database"}
#: PostgreSQL SQLSTATEs of the same kind (read-only transaction or standby, disk full, schema missing)
SCHEMA_MISSING = "database schema missing (not migrated, or the database was deleted or replaced)"
_PG_STORAGE_STATES = {"25006": "database is read-only", "53100": "disk full", "42P01": SCHEMA_MISSING}
#: `/readyz` reports "disk full" below this much free space on the SQLite file's filesystem
MIN_FREE_BYTES = 1024 * 1024
PROBE_WAIT_MS = 1000
#: SQLite's page cache a connection, filled as pages are read (SQLite's default is 2,000 KiB): the pages 64 ranks'
#: writes touch (each series' last leaf of the points index, the blocks, the batch ids; about 2.5 MB) outgrew the
#: default, and each miss was a pread (10 a 100-point request)
PAGE_CACHE_KIB = 8 * 1024
_STORAGE: weakref.WeakKeyDictionary[Engine, SqliteStorage] = weakref.WeakKeyDictionary()


class StorageUnavailable(exc.SQLAlchemyError):
    """The database's storage cannot be used (file deleted, replaced or read-only); `reason` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SqliteStorage:
    """A SQLite database file, checked on every transaction: same file as at start (identity), writable."""

    def __init__(self, path: str):
        self.path = path
        self.identity: tuple[int, int] | None = None

    def _stat_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_dev, info.st_ino

    def before_connect(self) -> None:
        """Refuse to open (and so create) a file other than the one the API started with."""
        if self.identity is not None:
            self.check(write=False)

    def after_connect(self) -> None:
        if self.identity is None:
            self.identity = self._stat_identity()

    def check(self, write: bool) -> None:
        """StorageUnavailable when the file is gone or replaced, or (`write`) not writable."""
        if self.identity is not None and self._stat_identity() != self.identity:
            raise StorageUnavailable("database file was deleted or replaced (restore it, or restart the API to "
                                     "use the new file)")
        if write and not os.access(self.path, os.W_OK):
            raise StorageUnavailable("database is read-only")

    def free_bytes(self) -> int:
        info = os.statvfs(os.path.dirname(self.path) or ".")
        return info.f_bavail * info.f_frsize


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


def make_engine(database_url: str, busy_timeout_ms: int = 30_000, echo: bool = False,
                wal_autocheckpoint: int | None = None) -> Engine:
    """An engine for `database_url` with the pragmas and transaction handling described above; SQLite:
    `wal_autocheckpoint` pages after which a commit checkpoints the WAL itself (SQLite's default, 1000, when None;
    see `wal.WalCheckpoints`)."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, echo=echo, pool_use_lifo=True,
                               connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})
        database = engine.url.database or ""
        file_backed = database not in ("", ":memory:") and not database.startswith("file:")
        storage = SqliteStorage(os.path.abspath(database)) if file_backed else None
        if storage is not None:
            _STORAGE[engine] = storage
        _configure_sqlite(engine, busy_timeout_ms, storage, wal_autocheckpoint)
    else:
        engine = create_engine(database_url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)
    event.listen(engine, "before_cursor_execute", _refuse_unstorable_text)
    return engine


class UnstorableText(ValueError):
    """A text value neither database can store (NUL, lone surrogate) reached a statement: the backstop behind the
    schemas' `Text` check, for a value some route took without it (the API answers 422)."""


def _refuse_unstorable_text(_connection: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any,
                            executemany: bool) -> None:
    """Check the parameters of single statements (lookups by what a URL gave: cheap, a few values); bulk inserts
    (executemany) carry only values the schemas checked."""
    if executemany or not parameters:
        return
    for value in parameters.values() if isinstance(parameters, dict) else parameters:
        if value.__class__ is str and ("\x00" in value or (not value.isascii() and not _encodable(value))):
            raise UnstorableText("text must not contain NUL (\\x00) characters or lone surrogates")


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, storage: SqliteStorage | None,
                      wal_autocheckpoint: int | None) -> None:
    if storage is not None:
        @event.listens_for(engine, "do_connect")
        def _before_connect(*_args: Any) -> None:
            storage.before_connect()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _use_wal(cursor, busy_timeout_ms)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        cursor.execute("PRAGMA temp_store = MEMORY")  # statement journals and RETURNING's rows: no temp files
        if wal_autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")
        cursor.close()
        if storage is not None:
            storage.after_connect()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        if storage is not None:
            storage.check(write)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def sqlite_storage(engine: Engine) -> SqliteStorage | None:
    """The storage checks of a SQLite file engine (None for PostgreSQL and in-memory SQLite)."""
    return _STORAGE.get(engine)


def param_mark(connection: Any) -> str:
    """The driver's parameter mark: `?` (sqlite3) or `%s` (psycopg)."""
    return "?" if connection.dialect.paramstyle == "qmark" else "%s"


def connection_of(database: Session | Connection | DriverConnection) -> Connection | DriverConnection:
    """The connection to run driver-level SQL on: a session's (it begins its transaction), or the one given."""
    return database.connection() if isinstance(database, Session) else database


_DATETIME_CODECS: dict[str, tuple[Any, Any]] = {}


def datetime_codec(dialect: Any) -> tuple[Any, Any]:
    """(to the driver, from the driver) for `UTCDateTime` values in driver-level SQL: what SQLAlchemy does to
    them (SQLite keeps naive UTC text)."""
    codec = _DATETIME_CODECS.get(dialect.name)
    if codec is None:
        column = UTCDateTime().dialect_impl(dialect)
        to_driver = column.bind_processor(dialect) or (lambda value: value)
        from_driver = column.result_processor(dialect, None) or (lambda value: value)
        codec = _DATETIME_CODECS[dialect.name] = (to_driver, from_driver)
    return codec


def _use_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Switch a fresh database to WAL. The mode is stored in the file, so this happens once; switching needs the
    database to itself, and SQLite does not wait for that (no busy handler): while other processes open the
    same fresh file it is retried until the busy timeout."""
    deadline = time.monotonic() + max(busy_timeout_ms, 1000) / 1000
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0].lower()
            if mode in ("wal", "memory"):
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as error:  # sqlite3.OperationalError: "database is locked"
            if not is_locked(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def is_locked(error: BaseException) -> bool:
    """Whether a DBAPI error is SQLite's "database is locked" / "busy"."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    message = str(error).lower()
    return "locked" in message or "busy" in message


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
    return is_locked(cause)


def storage_problem(error: BaseException) -> str | None:
    """What is wrong when `error` means the database's storage is unusable (file deleted or replaced, read-only,
    disk full, I/O error, schema missing); None for any other error. A retry helps once it is fixed."""
    if isinstance(error, StorageUnavailable):
        return error.reason
    cause = getattr(error, "orig", None)
    if cause is None:
        return None
    state = getattr(cause, "sqlstate", None)
    if state is not None:
        return _PG_STORAGE_STATES.get(state)
    if type(cause).__module__.split(".")[0] != "sqlite3":
        return None
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _SQLITE_STORAGE_CODES:
        return _SQLITE_STORAGE_CODES[code & 0xFF]
    return SCHEMA_MISSING if "no such table" in str(cause).lower() else None


def storage_check(engine: Engine) -> str | None:
    """Why the database cannot take writes now, or None. SQLite file: the file is the one the API started with,
    writable, its filesystem has MIN_FREE_BYTES free, and a committed no-op write (`UPDATE alembic_version`)
    succeeds; PostgreSQL: that write succeeds (rolled back). A busy database counts as working."""
    storage = _STORAGE.get(engine)
    try:
        if storage is not None:
            storage.check(write=True)
            free = storage.free_bytes()
            if free < MIN_FREE_BYTES:
                return f"disk full ({free} bytes free on the database's filesystem)"
        with (for_writes(engine).connect() as connection, _waiting_at_most(connection, PROBE_WAIT_MS),
              connection.begin() as transaction):
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
            if storage is None:
                transaction.rollback()  # PostgreSQL: that the write is allowed is enough
    except exc.SQLAlchemyError as error:
        if is_retryable(error) and storage_problem(error) is None:
            return None if storage is not None else f"database unreachable: {type(error.orig or error).__name__}"
        return storage_problem(error) or f"database error: {type(getattr(error, 'orig', None) or error).__name__}"
    return None


@contextlib.contextmanager
def _waiting_at_most(connection: Connection, milliseconds: int) -> Iterator[None]:
    """The probe waits for locks at most `milliseconds` (then it counts as busy), not the requests' timeout."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    if connection.dialect.name != "sqlite":
        cursor = raw.cursor()
        cursor.execute(f"SET lock_timeout = {int(milliseconds)}")
        try:
            yield
        finally:
            cursor.execute("RESET lock_timeout")
        return
    before = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    raw.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {int(before)}")
