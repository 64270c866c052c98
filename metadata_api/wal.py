"""SQLite WAL checkpoints off the request path.

By default SQLite checkpoints the WAL inside the commit that takes it past 1,000 pages: that commit copies the
pages into the database file and syncs it, a few milliseconds. Small metric batches are committed on the event loop
(`routes.points`), so that pause would stall every request the process is serving. The API instead raises the
commit's own threshold to WAL_BACKSTOP_PAGES (a backstop, for when checkpoints cannot keep up) and runs a PASSIVE
checkpoint every CHECKPOINT_INTERVAL_SECONDS in a worker thread (`wal_checkpoint_job`): it never waits for or
blocks writers or readers, and a hot page written many times between checkpoints is copied once. Processes
without the job (the CLI, tests) keep SQLite's default.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("trainmon.metadata_api.wal")

#: WAL pages after which a commit checkpoints by itself while the job runs (about 40 MB of 4 KiB pages)
WAL_BACKSTOP_PAGES = 10_000
CHECKPOINT_INTERVAL_SECONDS = 1.0


def checkpoint(engine: Engine) -> tuple[int, int, int]:
    """One PASSIVE checkpoint of `engine`'s SQLite database: (busy, WAL frames, frames checkpointed) as SQLite
    reports them (-1, -1 when the database is not in WAL mode)."""
    pooled = engine.raw_connection()
    try:
        cursor = pooled.cursor()
        busy, frames, done = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        cursor.close()
        return busy, frames, done
    finally:
        pooled.close()


async def wal_checkpoint_job(app: Any) -> None:
    """Every CHECKPOINT_INTERVAL_SECONDS, a PASSIVE checkpoint in a worker thread (a failure is logged; the next
    round tries again, and the commits' backstop remains)."""
    engine: Engine = app.state.engine
    while True:
        await asyncio.sleep(CHECKPOINT_INTERVAL_SECONDS)
        try:
            await asyncio.to_thread(checkpoint, engine)
        except (SQLAlchemyError, sqlite3.Error) as error:  # storage faults: /readyz and the requests report them
            log.debug("WAL checkpoint failed: %s", error)
