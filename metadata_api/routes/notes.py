"""Timestamped notes on a run: `POST /api/runs/{run_id}/notes`, `GET /api/runs/{run_id}/notes`."""

from __future__ import annotations

from fastapi import APIRouter, status

from .. import errors
from ..deps import ReadableRun, SessionDep, SettingsDep, WritableRun
from ..models import Note
from ..repositories import records
from ..schemas import NoteIn, NoteOut, Page
from ..services import limits
from .experiments import Limit, Offset

router = APIRouter(prefix="/api", tags=["notes"])


def note_out(note: Note, run_id: str) -> NoteOut:
    return NoteOut(id=note.id, run_id=run_id, text=note.text, created_at=note.created_at)


@router.post("/runs/{run_id}/notes", response_model=NoteOut, status_code=status.HTTP_201_CREATED,
             responses={413: errors.error("body over MAX_BODY_BYTES, text over MAX_NOTE_BYTES, or "
                                                             "the run has MAX_NOTES_PER_RUN notes")})
def add_note(body: NoteIn, run: WritableRun, session: SessionDep, settings: SettingsDep) -> NoteOut:
    """Add a note to the run (timestamped by the server)."""
    limits.check_note(session, run.key, body.text, settings)
    answer = note_out(records.add_note(session, run.key, body.text), run.id)
    session.commit()
    return answer


@router.get("/runs/{run_id}/notes", response_model=Page[NoteOut])
def list_notes(run: ReadableRun, session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Page[NoteOut]:
    """The run's notes, oldest first."""
    notes, total = records.notes_of_run(session, run.key, limit, offset)
    return Page[NoteOut](items=[note_out(n, run.id) for n in notes], total=total, limit=limit, offset=offset)
