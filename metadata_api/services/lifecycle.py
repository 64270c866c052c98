"""Run lifecycle: RUNNING -> COMPLETED | FAILED | CRASHED, heartbeats and crash detection.

Transitions (`POST /api/runs/{id}/status`):

- RUNNING -> COMPLETED, FAILED, CRASHED;
- CRASHED -> COMPLETED, FAILED (a late final report: crash detection only guessed), RUNNING (it is alive);
- COMPLETED and FAILED are final; the same status again is a no-op (a retried request succeeds);
- anything else -> 409 (`IllegalTransition`).

A heartbeat on a CRASHED run brings it back to RUNNING; on a final run it is a 409. `POST /api/runs` with the
id of a CRASHED or FAILED run resumes it (RUNNING again, end time cleared); a COMPLETED one cannot be resumed.
A RUNNING run whose last heartbeat (or metric batch) is older than HEARTBEAT_TIMEOUT_SECONDS becomes CRASHED:
in the background every CRASH_CHECK_INTERVAL_SECONDS, and whenever a read sees such a run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import Run, RunStatus
from ..repositories import runs as run_repo
from . import notifications

RUNNING, COMPLETED, FAILED, CRASHED = (RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED,
                                       RunStatus.CRASHED)
ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RUNNING: frozenset({COMPLETED, FAILED, CRASHED}),
    CRASHED: frozenset({COMPLETED, FAILED, RUNNING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
}
RESUMABLE = frozenset({CRASHED, FAILED})
StatusListener = Callable[[str, int], None]  # (new status, number of runs)


class IllegalTransition(Exception):
    def __init__(self, run_id: str, current: str, wanted: str, hint: str = ""):
        super().__init__(f"run {run_id!r} is {current}; it cannot become {wanted}{hint}")


def change_status(run: Run, wanted: RunStatus, now: datetime | None = None) -> bool:
    """Apply a transition; True when the status changed, False for a no-op repeat."""
    current = RunStatus(run.status)
    if wanted == current:
        return False
    if wanted not in ALLOWED[current]:
        raise IllegalTransition(run.id, current.value, wanted.value)
    now = now or utcnow()
    run.status = wanted.value
    if wanted == RUNNING:
        run.end_time = None
        run.last_heartbeat = now
    else:
        run.end_time = now
    notifications.status_changed(run)
    return True


def resume(run: Run, now: datetime | None = None) -> bool:
    """`POST /api/runs` for an existing id: RUNNING stays, CRASHED/FAILED resume, COMPLETED is refused."""
    current = RunStatus(run.status)
    if current == RUNNING:
        return False
    if current not in RESUMABLE:
        raise IllegalTransition(run.id, current.value, RUNNING.value, " (start a new run_id to train on)")
    run.status = RUNNING.value
    run.end_time = None
    run.last_heartbeat = now or utcnow()
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
    crashed = run_repo.mark_stale_crashed(session, now - timedelta(seconds=timeout_seconds), now)
    notifications.runs_crashed(session, crashed)
    return crashed
