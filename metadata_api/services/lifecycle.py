"""Run lifecycle: RUNNING -> COMPLETED | FAILED | CRASHED, heartbeats and crash detection.

Transitions (`POST /api/runs/{id}/status`):

- RUNNING -> COMPLETED, FAILED, CRASHED (`trainmon.common.statuses.FINAL_STATUSES`);
- CRASHED -> COMPLETED, FAILED (a late final report: crash detection only guessed), RUNNING (it is alive);
- COMPLETED and FAILED are final; the same status again is a no-op (a retried request succeeds);
- anything else -> 409 (`IllegalTransition`).

A heartbeat on a CRASHED run brings it back to RUNNING; on a final run it is a 409. `POST /api/runs` with the
id of a CRASHED or FAILED run resumes it (RUNNING again, end time cleared); a COMPLETED one cannot be resumed.
A RUNNING run whose last heartbeat (or metric batch) is older than HEARTBEAT_TIMEOUT_SECONDS becomes CRASHED:
in the background every CRASH_CHECK_INTERVAL_SECONDS, and whenever a read sees such a run (`CrashDetector`).

Every status change, a new run's first RUNNING included, goes through `_set_status`: the one place that changes
a status, counts it (`trainmon_api_run_status_changes_total`, on the counter `count_status_changes` attached to
the session factory) and queues its notification (`services.notifications`). The count and the notification
take effect when the session commits; a rollback drops both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, object_session, sessionmaker
from trainmon.common.statuses import FINAL_STATUSES

from ..db import utcnow
from ..models import Run, RunStatus
from ..repositories import runs as run_repo
from . import notifications

RUNNING, COMPLETED, FAILED, CRASHED = (RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED,
                                       RunStatus.CRASHED)
ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RUNNING: frozenset(RunStatus(status) for status in FINAL_STATUSES),
    CRASHED: frozenset({COMPLETED, FAILED, RUNNING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
}
RESUMABLE = frozenset({CRASHED, FAILED})
COUNTER_KEY = "trainmon.status_change_counter"  # session.info: the labelled Counter status changes go to
PENDING_KEY = "trainmon.pending_status_changes"  # session.info: changes counted once the session commits


class IllegalTransition(Exception):
    def __init__(self, run_id: str, current: str, wanted: str, hint: str = ""):
        super().__init__(f"run {run_id!r} is {current}; it cannot become {wanted}{hint}")


def count_status_changes(sessions: sessionmaker[Session], counter: Any) -> None:
    """Count the status changes committed by sessions of `sessions` on `counter` (a prometheus Counter labelled
    by status); `create_app` attaches the app's `trainmon_api_run_status_changes_total` to its write sessions."""
    sessions.configure(info={COUNTER_KEY: counter})


def _set_status(session: Session | None, runs: Sequence[Run], wanted: RunStatus, now: datetime) -> None:
    """The only place a run's status changes: set it on `runs` (RUNNING clears the end time and counts as a
    heartbeat; any other status ends the run at `now`), count the change and queue its notification, both
    for when `session` commits."""
    for run in runs:
        run.status = wanted.value
        if wanted == RUNNING:
            run.end_time = None
            run.last_heartbeat = now
        else:
            run.end_time = now
    if session is not None and runs and session.info.get(COUNTER_KEY) is not None:
        session.info.setdefault(PENDING_KEY, Counter())[wanted.value] += len(runs)
    for run in runs:
        notifications.status_changed(run, session)


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    pending: Counter[str] | None = session.info.pop(PENDING_KEY, None)
    counter = session.info.get(COUNTER_KEY)
    if pending and counter is not None:
        for status, count in pending.items():
            counter.labels(status).inc(count)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


def start(session: Session, run: Run, now: datetime | None = None) -> Run:
    """Add a new run, RUNNING from `now` (a status change like any other)."""
    now = now or utcnow()
    run.start_time = now
    _set_status(session, [run], RUNNING, now)
    return run_repo.add_run(session, run)


def change_status(run: Run, wanted: RunStatus, now: datetime | None = None) -> bool:
    """Apply a transition; True when the status changed, False for a no-op repeat."""
    current = RunStatus(run.status)
    if wanted == current:
        return False
    if wanted not in ALLOWED[current]:
        raise IllegalTransition(run.id, current.value, wanted.value)
    _set_status(object_session(run), [run], wanted, now or utcnow())
    return True


def resume(run: Run, now: datetime | None = None) -> bool:
    """`POST /api/runs` for an existing id: RUNNING stays, CRASHED/FAILED resume, COMPLETED is refused."""
    current = RunStatus(run.status)
    if current == RUNNING:
        return False
    if current not in RESUMABLE:
        raise IllegalTransition(run.id, current.value, RUNNING.value, " (start a new run_id to train on)")
    _set_status(object_session(run), [run], RUNNING, now or utcnow())
    return True


def heartbeat(run: Run, now: datetime | None = None) -> bool:
    """Record a sign of life; a CRASHED run becomes RUNNING again (True when the status changed)."""
    now = now or utcnow()
    current = RunStatus(run.status)
    if current in (COMPLETED, FAILED):
        raise IllegalTransition(run.id, current.value, RUNNING.value, " (a finished run takes no heartbeat)")
    run.last_heartbeat = now
    if current == CRASHED:
        return change_status(run, RUNNING, now)
    return False


def is_stale(run: Run, timeout_seconds: float, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return run.status == RUNNING.value and run.last_heartbeat < now - timedelta(seconds=timeout_seconds)


def any_stale(runs: Iterable[Run], timeout_seconds: float) -> bool:
    now = utcnow()
    return any(is_stale(run, timeout_seconds, now) for run in runs)


def sweep_crashed(session: Session, timeout_seconds: float) -> list[str]:
    """Mark every RUNNING run silent for longer than the timeout CRASHED (caller commits); their ids."""
    now = utcnow()
    stale = run_repo.stale_running_for_update(session, now - timedelta(seconds=timeout_seconds))
    _set_status(session, stale, CRASHED, now)
    return [run.id for run in stale]


@dataclass(frozen=True)
class CrashDetector:
    """Crash detection for one app: sweeps in short write transactions of their own, in the background
    (`sweep`) and on reads (`refresh_if_stale`, `refresh_stale_runs`)."""

    write_sessions: Callable[[], Session]
    timeout_seconds: float

    def sweep(self) -> list[str]:
        """One crash sweep in its own write transaction; the ids of the runs marked CRASHED."""
        with self.write_sessions() as session:
            crashed = sweep_crashed(session, self.timeout_seconds)
            session.commit()
        return crashed

    def refresh_if_stale(self, reader: Session, runs: Iterable[Run]) -> bool:
        """Crash detection on read: when a run read here is RUNNING past the heartbeat timeout, mark every such
        run CRASHED in a short write transaction of its own, and end the reader's transaction so that it reads
        the new state. True when that happened (reload what you hold)."""
        return any_stale(runs, self.timeout_seconds) and self._sweep_for(reader)

    def refresh_stale_runs(self, reader: Session) -> bool:
        """Crash detection on read for listings: like `refresh_if_stale`, for any run (one index lookup)."""
        cutoff = utcnow() - timedelta(seconds=self.timeout_seconds)
        return run_repo.has_stale_running(reader, cutoff) and self._sweep_for(reader)

    def _sweep_for(self, reader: Session) -> bool:
        reader.rollback()  # the reader's snapshot ends; its next statement sees the sweep
        self.sweep()
        return True
