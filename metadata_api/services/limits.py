"""Per-run limits, so that no run grows without bound and every later read of it stays fast: tags
(MAX_TAGS_PER_RUN), params as JSON (MAX_PARAMS_BYTES; the same for checkpoint metrics and artifact metadata),
notes (MAX_NOTES_PER_RUN) and one note's size (MAX_NOTE_BYTES). Going over answers 413 naming the field and the
limit, and the request stores nothing. (Two concurrent requests on PostgreSQL may each pass and together go over
a count limit by one request's worth.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from ..repositories import run_limits
from ..settings import Settings


def _too_large(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)


def check_tags(session: Session | None, run_key: int | None, tags: Mapping[str, str], settings: Settings) -> None:
    """413 unless the run, with `tags` set, has at most MAX_TAGS_PER_RUN tags (`run_key` None: a new run)."""
    limit = settings.max_tags_per_run
    if len(tags) > limit:
        raise _too_large(f"tags: {len(tags)} tags, at most MAX_TAGS_PER_RUN={limit} a run")
    if session is None or run_key is None:
        return
    existing = run_limits.tag_keys(session, run_key)
    total = len(existing | set(tags))
    if total > limit:
        raise _too_large(f"tags: the run would have {total} tags, at most MAX_TAGS_PER_RUN={limit}")


def check_json_size(value: Any, settings: Settings, field: str = "params") -> None:
    """413 when `value` as JSON is larger than MAX_PARAMS_BYTES."""
    if value is None:
        return
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > settings.max_params_bytes:
        raise _too_large(f"{field}: {size} bytes as JSON, at most MAX_PARAMS_BYTES={settings.max_params_bytes}")


def check_note(session: Session, run_key: int, text: str, settings: Settings) -> None:
    """413 when the note is over MAX_NOTE_BYTES, or the run has MAX_NOTES_PER_RUN notes already."""
    size = len(text.encode("utf-8"))
    if size > settings.max_note_bytes:
        raise _too_large(f"text: {size} bytes, at most MAX_NOTE_BYTES={settings.max_note_bytes}")
    count = run_limits.note_count(session, run_key)
    if count >= settings.max_notes_per_run:
        raise _too_large(f"notes: the run has {count} notes, at most MAX_NOTES_PER_RUN={settings.max_notes_per_run}")
