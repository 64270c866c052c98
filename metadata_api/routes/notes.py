"""Timestamped notes on a run: `POST /api/runs/{run_id}/notes`, `GET /api/runs/{run_id}/notes`."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from ..deps import ReadableRun, SessionDep, WritableRun
from ..models import Note
from ..repositories import records
from ..schemas import Page
from .experiments import Limit, Offset

router = APIRouter(prefix="/api/runs", tags=["notes"])


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=65_536)


class NoteOut(BaseModel):
    id: int
    run_id: str
    text: str
    created_at: datetime


def note_out(note: Note) -> NoteOut:
    return NoteOut(id=note.id, run_id=note.run_id, text=note.text, created_at=note.created_at)


@router.post("/{run_id}/notes", response_model=NoteOut, status_code=status.HTTP_201_CREATED)
def add_note(body: NoteIn, run: WritableRun, session: SessionDep) -> NoteOut:
    """Add a note to the run (timestamped by the server)."""
    answer = note_out(records.add_note(session, run.id, body.text))
    session.commit()
    return answer


@router.get("/{run_id}/notes", response_model=Page[NoteOut])
def list_notes(run: ReadableRun, session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Page[NoteOut]:
    """The run's notes, oldest first."""
    notes, total = records.notes_of_run(session, run.id, limit, offset)
    return Page[NoteOut](items=[note_out(n) for n in notes], total=total, limit=limit, offset=offset)
