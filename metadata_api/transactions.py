"""Driver-level write transactions for the hot path (metric and log batches, heartbeats): the DBAPI connection
with `exec_driver_sql` and nothing of SQLAlchemy's per-statement machinery, committed as a whole or not at all.

`driver_transaction(engine)` takes a pooled connection and waits for SQLite's write lock (up to the busy timeout)
like a write session. `driver_transaction(engine, wait=False)` is for the event loop, which must not wait: on a
SQLite file it uses the engine's `LoopWriter`, a connection kept out of the pool whose busy timeout is 0, so
`BEGIN IMMEDIATE` fails at once while another connection holds the lock and `WriterBusy` tells the caller to go to
a worker thread instead.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, exc

from .db import is_locked, sqlite_storage


class DriverResult:
    """The rows of a `DriverConnection` statement, read as from a SQLAlchemy result (plain tuples)."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any):
        self._cursor = cursor

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._cursor)

    def first(self) -> tuple | None:
        return self._cursor.fetchone()

    def scalar(self) -> Any:
        row = self._cursor.fetchone()
        return None if row is None else row[0]

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class DriverConnection:
    """One DBAPI connection (a pooled one, or the `LoopWriter`'s) inside a write transaction, offering what the hot
    path's repository functions use of a SQLAlchemy `Connection`: `exec_driver_sql` (a list of parameter tuples
    is an executemany) and `dialect`. A statement costs the driver's time only (about 1 us against 20-40 us
    through SQLAlchemy on the 2-core machine); DBAPI errors are raised as SQLAlchemy's (`DBAPIError.instance`),
    so storage faults, busy databases and dropped connections are answered as on every other path."""

    def __init__(self, pooled: Any, dialect: Any):
        self.dialect = dialect
        self._pooled = pooled
        self._error = dialect.loaded_dbapi.Error

    def exec_driver_sql(self, statement: str, parameters: Any = ()) -> DriverResult:
        cursor = self._pooled.cursor()
        try:
            if parameters.__class__ is list:
                cursor.executemany(statement, parameters)
            else:
                cursor.execute(statement, parameters)
        except self._error as error:
            raise self.translated(error, statement, parameters, cursor) from error
        return DriverResult(cursor)

    def translated(self, error: Exception, statement: str | None = None, parameters: Any = None,
                   cursor: Any = None) -> exc.DBAPIError:
        """`error` as SQLAlchemy raises it; a dropped connection is invalidated (not used again)."""
        gone = self.dialect.is_disconnect(error, self._pooled.dbapi_connection, cursor)
        if gone:
            self._pooled.invalidate(error)
        return exc.DBAPIError.instance(statement, parameters, error, self._error, connection_invalidated=gone,
                                       dialect=self.dialect)

    @property
    def usable(self) -> bool:
        """False once the connection was invalidated or closed."""
        return self._pooled.dbapi_connection is not None

    def commit(self) -> None:
        try:
            self._pooled.commit()
        except self._error as error:
            raise self.translated(error, "COMMIT") from error

    @contextlib.contextmanager
    def committed(self) -> Iterator[DriverConnection]:
        """This connection until the block ends, then a commit; a rollback when the block raises."""
        try:
            yield self
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        """Roll back whatever is open; a connection that cannot is unusable and left to be replaced."""
        with contextlib.suppress(Exception):
            self._pooled.rollback()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pooled.close()


class WriterBusy(Exception):
    """`driver_transaction(..., wait=False)`: another connection holds SQLite's write lock, or the event loop's
    connection is in use (by another thread's event loop); nothing was done."""


class LoopWriter:
    """A SQLite file's connection for writes made on the event loop (`driver_transaction(wait=False)`), kept out of
    the pool. Its busy timeout is 0 for good: `BEGIN IMMEDIATE` fails at once while another connection holds the
    write lock. A request costs neither a pool checkout and return nor the three pragma statements that set and
    restored a pooled connection's timeout, and the connection's page cache stays warm (SQLite discards a
    connection's cache when another connection wrote since its last transaction; most writes are this one's)."""

    def __init__(self) -> None:
        self._in_use = threading.Lock()  # one event loop a process in the API; a second one goes to a thread
        self._connection: DriverConnection | None = None

    @contextlib.contextmanager
    def transaction(self, engine: Engine) -> Iterator[DriverConnection]:
        if not self._in_use.acquire(blocking=False):
            raise WriterBusy("the event loop's connection is in use")
        try:
            connection = self._open(engine)
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except exc.OperationalError as error:
                if is_locked(error.orig):
                    raise WriterBusy("another connection holds the write lock") from error
                raise
            with connection.committed():
                yield connection
        finally:
            self._in_use.release()

    def _open(self, engine: Engine) -> DriverConnection:
        connection = self._connection
        if connection is None or not connection.usable:
            pooled = _checkout(engine)
            pooled.detach()  # the pool neither counts nor recycles it; closing it closes the connection
            connection = DriverConnection(pooled, engine.dialect)
            connection.exec_driver_sql("PRAGMA busy_timeout = 0")
            self._connection = connection
        return connection

    def close(self) -> None:
        with self._in_use:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


_LOOP_WRITERS: weakref.WeakKeyDictionary[Engine, LoopWriter] = weakref.WeakKeyDictionary()


def can_write_without_waiting(engine: Engine) -> bool:
    """Whether `driver_transaction(engine, wait=False)` can succeed at all: a SQLite file (whose write lock can be
    tried without waiting, on the engine's `LoopWriter`)."""
    return sqlite_storage(engine) is not None


def close_loop_writer(engine: Engine) -> None:
    """Close the engine's `LoopWriter` connection, if it has one (before `engine.dispose()`)."""
    writer = _LOOP_WRITERS.pop(engine, None)
    if writer is not None:
        writer.close()


@contextlib.contextmanager
def driver_transaction(engine: Engine, wait: bool = True) -> Iterator[DriverConnection]:
    """A write transaction (`DriverConnection`), committed when the block ends and rolled back when it raises: what
    a write session does (the SQLite storage check, BEGIN IMMEDIATE, the pool's pre-ping on PostgreSQL), without
    the ORM's and SQLAlchemy's per-statement machinery.

    `wait=False` (see `can_write_without_waiting`): on the engine's `LoopWriter`, `WriterBusy` at once instead of
    waiting for the write lock, for a caller that must not block, e.g. the event loop."""
    storage = sqlite_storage(engine)
    if storage is not None:
        storage.check(write=True)
    if not wait:
        if storage is None:
            raise WriterBusy("only a SQLite file's write lock can be tried without waiting")
        writer = _LOOP_WRITERS.get(engine)
        if writer is None:
            writer = _LOOP_WRITERS.setdefault(engine, LoopWriter())
        with writer.transaction(engine) as connection:
            yield connection
        return
    pooled = _checkout(engine)
    connection = DriverConnection(pooled, engine.dialect)
    try:
        with connection.committed():
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield connection
    finally:
        pooled.close()


def _checkout(engine: Engine) -> Any:
    """A pooled DBAPI connection; a failure to connect is raised as SQLAlchemy's `DBAPIError`."""
    try:
        return engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(None, None, error, engine.dialect.loaded_dbapi.Error,
                                      dialect=engine.dialect) from error
