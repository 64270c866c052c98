"""Timestamped notes on a run: `POST /api/runs/{run_id}/notes`, `GET /api/runs/{run_id}/notes`."""

from __future__ import annotations

from fastapi import APIRouter, status

from ..deps import ReadableRun, SessionDep, WritableRun
from ..models import Note
from ..repositories import records
from ..schemas import NoteIn, NoteOut, Page
from .experiments import Limit, Offset

router = APIRouter(prefix="/api", tags=["notes"])


def note_out(note: Note) -> NoteOut:
    return NoteOut(id=note.id, run_id=note.run_id, text=note.text, created_at=note.created_at)


@router.post("/runs/{run_id}/notes", response_model=NoteOut, status_code=status.HTTP_201_CREATED)
def add_note(body: NoteIn, run: WritableRun, session: SessionDep) -> NoteOut:
    """Add a note to the run (timestamped by the server)."""
    answer = note_out(records.add_note(session, run.id, body.text))
    session.commit()
    return answer


@router.get("/runs/{run_id}/notes", response_model=Page[NoteOut])
def list_notes(run: ReadableRun, session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Page[NoteOut]:
    """The run's notes, oldest first."""
    notes, total = records.notes_of_run(session, run.id, limit, offset)
    return Page[NoteOut](items=[note_out(n) for n in notes], total=total, limit=limit, offset=offset)
