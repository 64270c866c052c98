"""Background jobs (crash sweep, retention) run on exactly one API process at a time, however many replicas or
workers share the database.

The first process to take the jobs lock leads and keeps it while it lives: on PostgreSQL a session-level
advisory lock (`pg_try_advisory_lock`) held by one dedicated connection, so a process that dies (or loses its
connection) frees it and another takes over at its next check; on SQLite an exclusive `flock` on
``<database>.jobs.lock`` beside the database file, released by the kernel when the process ends. The others
check again every job interval. Notifications need no lock: the process that commits a status change sends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from typing import Any

from sqlalchemy import Engine, text

log = logging.getLogger("trainmon.metadata_api.leadership")

#: the advisory lock key of trainmon's background jobs (any 64-bit constant, the same for every replica)
ADVISORY_KEY = 0x7472_6E6D_6A6F_6273  # "trnmjobs"


class JobsLock:
    """Whether this process runs the background jobs; `acquire` is cheap to call again and again."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._connection: Any = None
        self._file: Any = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None

    def acquire(self) -> bool:
        """True when this process leads (it already did, or it took the lock now)."""
        with self._lock:
            if self._connection is not None and not self._alive():
                self._drop_connection()
            if self.held:
                return True
            try:
                taken = self._take_file() if self.engine.dialect.name == "sqlite" else self._take_advisory()
            except Exception as error:  # noqa: BLE001 - the database is down: not leading, try again later
                log.warning("cannot take the background-jobs lock: %s", error)
                return False
            if taken:
                log.info("this process runs the background jobs (crash sweep, retention)")
            return taken

    def release(self) -> None:
        with self._lock:
            self._drop_connection()
            if self._file is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._file, fcntl.LOCK_UN)
                self._file.close()
                self._file = None

    def _take_advisory(self) -> bool:
        connection = self.engine.connect()
        try:
            taken = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY})
                         .scalar())
            connection.commit()
        except Exception:
            connection.close()
            raise
        if taken:
            self._connection = connection
        else:
            connection.close()
        return taken

    def _take_file(self) -> bool:
        database = self.engine.url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return True  # an in-memory database belongs to this process alone
        handle = open(f"{os.path.abspath(database)}.jobs.lock", "a+")  # noqa: SIM115 - held while leading
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def _alive(self) -> bool:
        try:
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            return True
        except Exception:  # noqa: BLE001 - a lost connection lost the lock with it
            return False

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
