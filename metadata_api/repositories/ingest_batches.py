"""Client batch ids already stored: the idempotency record for metric and log batches."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import IngestBatch
from .upsert import insert_ignore


def claim_batch(session: Session, run_key: int, kind: str, batch_id: str, accepted: int) -> bool:
    """Record `batch_id` for this run and kind; False when it was already stored (a replay).

    Called in the same transaction as the rows it guards: both commit, or neither does.
    """
    values = {"run_key": run_key, "kind": kind, "batch_id": batch_id, "accepted": accepted, "created_at": utcnow()}
    return insert_ignore(session, IngestBatch.__table__, values, ["run_key", "kind", "batch_id"])


def stored_count(session: Session, run_key: int, kind: str, batch_id: str) -> int | None:
    """How many items the stored batch accepted (None when unknown)."""
    return session.scalar(select(IngestBatch.accepted).where(
        IngestBatch.run_key == run_key, IngestBatch.kind == kind, IngestBatch.batch_id == batch_id))
