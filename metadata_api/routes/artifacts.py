"""Artifacts (images, histograms, graphs, files) of a run.

`POST /api/runs/{run_id}/artifacts` (multipart: `file`, `kind`, `name`, `step?`, `metadata?` as a JSON object)
writes the file atomically under `<ARTIFACT_ROOT>/experiments/<experiment_id>/artifacts/<run_id>/[step-<n>/]<name>`
and its metadata to the database; uploading the same (name, step) again replaces both (200; new ones 201).
`GET /api/runs/{run_id}/artifacts` lists them; `GET .../artifacts/{artifact_id}/file` downloads one.
Names are plain file names (`trainmon.common.files.check_name`): a path separator or '..' -> 400; files over
MAX_ARTIFACT_BYTES -> 413.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import select
from trainmon.common.files import MAX_NAME_BYTES, NAME_RULE, BadName
from trainmon.common.wire import json_safe

from ..db import utcnow
from ..deps import ReadableRun, SessionDep, SettingsDep, WritableRun
from ..models import Artifact
from ..repositories import records
from ..schemas import ArtifactKind, ArtifactOut, Page
from ..services import artifact_store
from .experiments import Limit, Offset

router = APIRouter(prefix="/api", tags=["artifacts"])


def artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(id=artifact.id, run_id=artifact.run_id, kind=artifact.kind, name=artifact.name,
                       step=artifact.step, path=artifact.path, media_type=artifact.media_type,
                       size_bytes=artifact.size_bytes, sha256=artifact.sha256, metadata=artifact.meta or {},
                       created_at=artifact.created_at)


@router.post("/runs/{run_id}/artifacts", response_model=ArtifactOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"description": "replaced the artifact of the same name and step"},
                        400: {"description": "the name has a path separator or '..'"},
                        413: {"description": "file over MAX_ARTIFACT_BYTES"}})
def upload_artifact(run: WritableRun, session: SessionDep, settings: SettingsDep, response: Response,
                    file: Annotated[UploadFile, File()], kind: Annotated[ArtifactKind, Form()],
                    name: Annotated[str, Form(min_length=1, max_length=MAX_NAME_BYTES, description=NAME_RULE)],
                    step: Annotated[int | None, Form(ge=0)] = None,
                    metadata: Annotated[str | None, Form()] = None) -> ArtifactOut:
    meta = _metadata(metadata)
    try:
        relative = artifact_store.artifact_relative_path(run.experiment_id, run.id, name, step)
        stored = artifact_store.store(settings.artifact_root, relative, file.file, settings.max_artifact_bytes)
    except BadName as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    except artifact_store.TooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from error
    artifact = session.scalar(select(Artifact).where(Artifact.run_id == run.id, Artifact.path == relative))
    created = artifact is None
    try:
        if artifact is None:
            artifact = Artifact(run_id=run.id, path=relative)
            session.add(artifact)
        artifact.kind, artifact.name, artifact.step, artifact.meta = kind, name, step, meta
        artifact.media_type = file.content_type
        artifact.size_bytes, artifact.sha256, artifact.created_at = stored.size_bytes, stored.sha256, utcnow()
        session.flush()
        answer = artifact_out(artifact)
        session.commit()
    except Exception:
        if created:  # no row points at the new file: do not leave it behind
            artifact_store.remove(settings.artifact_root, relative)
        raise
    if not created:
        response.status_code = status.HTTP_200_OK
    return answer


@router.get("/runs/{run_id}/artifacts", response_model=Page[ArtifactOut])
def list_artifacts(run: ReadableRun, session: SessionDep, kind: ArtifactKind | None = None, limit: Limit = 50,
                   offset: Offset = 0) -> Page[ArtifactOut]:
    """The run's artifacts by step then name; filter by `kind`."""
    query = select(Artifact).where(Artifact.run_id == run.id)
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    rows, total = records.paginate(session, query.order_by(Artifact.step, Artifact.name, Artifact.id), limit, offset)
    return Page[ArtifactOut](items=[artifact_out(a) for a in rows], total=total, limit=limit, offset=offset)


@router.get("/runs/{run_id}/artifacts/{artifact_id}/file", response_class=FileResponse,
            responses={404: {"description": "no such artifact, or its file is gone"}})
def download_artifact(run: ReadableRun, session: SessionDep, settings: SettingsDep, artifact_id: int) -> FileResponse:
    artifact = session.scalar(select(Artifact).where(Artifact.run_id == run.id, Artifact.id == artifact_id))
    path = settings.artifact_root / artifact.path if artifact is not None else None
    if artifact is None or path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"artifact_id: run {run.id!r} has no artifact {artifact_id}")
    return FileResponse(path, media_type=artifact.media_type or "application/octet-stream", filename=artifact.name)


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"metadata: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "metadata: must be a JSON object")
    return json_safe(value)  # NaN/Infinity as the contract's strings, as JsonObject fields store them
