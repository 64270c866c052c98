"""Client batch ids already stored: the idempotency record for metric and log batches."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..db import connection_of, datetime_codec, param_mark, utcnow

# The hot path of every ingest request: driver-level SQL, the same text on SQLite and PostgreSQL. Whether the row
# went in is the statement's row count (sqlite3: SQLite's changes(), 0 when DO NOTHING skipped it; psycopg: the
# command tag's count), not RETURNING, which SQLite runs through a temporary table (~10 us a request).
_CLAIM = ("INSERT INTO ingest_batches (run_key, kind, batch_id, accepted, created_at) VALUES ({0}, {0}, {0}, {0}, {0}) "
          "ON CONFLICT (run_key, kind, batch_id) DO NOTHING")
_STORED = "SELECT accepted FROM ingest_batches WHERE run_key = {0} AND kind = {0} AND batch_id = {0}"


def claim_batch(database: Session | Any, run_key: int, kind: str, batch_id: str, accepted: int) -> bool:
    """Record `batch_id` for this run and kind; False when it was already stored (a replay).

    Called in the same transaction as the rows it guards: both commit, or neither does.
    """
    connection = connection_of(database)
    created_at = datetime_codec(connection.dialect)[0](utcnow())
    return connection.exec_driver_sql(_CLAIM.format(param_mark(connection)),
                                      (run_key, kind, batch_id, accepted, created_at)).rowcount == 1


def stored_count(database: Session | Any, run_key: int, kind: str, batch_id: str) -> int | None:
    """How many items the stored batch accepted (None when unknown)."""
    connection = connection_of(database)
    return connection.exec_driver_sql(_STORED.format(param_mark(connection)), (run_key, kind, batch_id)).scalar()
