"""Client batch ids already stored: the idempotency record for metric and log batches."""

from __future__ import annotations

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from ..db import UTCDateTime, utcnow
from ..models import IngestBatch

# Built once (the hot path of every ingest request): the same text on SQLite and PostgreSQL; RETURNING, because
# rowcount is not reliable across drivers.
_CLAIM = text("INSERT INTO ingest_batches (run_key, kind, batch_id, accepted, created_at) "
              "VALUES (:run_key, :kind, :batch_id, :accepted, :created_at) "
              "ON CONFLICT (run_key, kind, batch_id) DO NOTHING RETURNING run_key").bindparams(
    bindparam("created_at", type_=UTCDateTime()))


def claim_batch(session: Session, run_key: int, kind: str, batch_id: str, accepted: int) -> bool:
    """Record `batch_id` for this run and kind; False when it was already stored (a replay).

    Called in the same transaction as the rows it guards: both commit, or neither does.
    """
    values = {"run_key": run_key, "kind": kind, "batch_id": batch_id, "accepted": accepted, "created_at": utcnow()}
    return session.execute(_CLAIM, values).first() is not None


def stored_count(session: Session, run_key: int, kind: str, batch_id: str) -> int | None:
    """How many items the stored batch accepted (None when unknown)."""
    return session.scalar(select(IngestBatch.accepted).where(
        IngestBatch.run_key == run_key, IngestBatch.kind == kind, IngestBatch.batch_id == batch_id))
