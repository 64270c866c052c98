"""Artifacts (images, histograms, graphs, files) of a run.

`POST /api/runs/{run_id}/artifacts` (multipart: `file`, `kind`, `name`, `step?`, `metadata?` as a JSON object)
writes the file atomically under `<ARTIFACT_ROOT>/experiments/<experiment_id>/artifacts/<run_id>/[step-<n>/]<name>`
and its metadata to the database; uploading the same (name, step) again replaces both (200; new ones 201).
`GET /api/runs/{run_id}/artifacts` lists them; `GET .../artifacts/{artifact_id}/file` downloads one: a PNG,
JPEG, GIF or WebP (by its bytes) as that image type, anything else as `application/octet-stream` attachment.
Names are plain file names (`trainmon.common.files.check_name`): a path separator or '..' -> 400; files over
MAX_ARTIFACT_BYTES -> 413.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Path, Response, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import select
from trainmon.common.files import MAX_NAME_BYTES, NAME_RULE, BadName

from .. import errors
from ..db import utcnow
from ..deps import ReadableRun, SessionDep, SettingsDep, WritableRun
from ..models import NAME_LENGTH, Artifact
from ..repositories import records
from ..schemas import INT32_MAX, INT64_MAX, ArtifactKind, ArtifactOut, Page, Text, invalid
from ..schemas.base import MAX_JSON_TEXT, check_json_object, text_problem
from ..services import artifact_store, limits
from .experiments import Limit, Offset

router = APIRouter(prefix="/api", tags=["artifacts"])
METADATA = "a JSON object (at most MAX_PARAMS_BYTES)"


def artifact_out(artifact: Artifact, run_id: str) -> ArtifactOut:
    return ArtifactOut(id=artifact.id, run_id=run_id, kind=artifact.kind, name=artifact.name,
                       step=artifact.step, path=artifact.path, media_type=artifact.media_type,
                       size_bytes=artifact.size_bytes, sha256=artifact.sha256, metadata=artifact.meta or {},
                       created_at=artifact.created_at)


@router.post("/runs/{run_id}/artifacts", response_model=ArtifactOut, status_code=status.HTTP_201_CREATED,
             responses={
                        200: {"model": ArtifactOut, "description": "replaced the artifact of the same name and step"},
                        400: errors.error("the name has a path separator or '..', or the body is not multipart"),
                        413: errors.error("file over MAX_ARTIFACT_BYTES, or metadata over MAX_PARAMS_BYTES")})
def upload_artifact(run: WritableRun, session: SessionDep, settings: SettingsDep, response: Response,
                    file: Annotated[UploadFile, File()], kind: Annotated[ArtifactKind, Form()],
                    name: Annotated[Text, Form(min_length=1, max_length=MAX_NAME_BYTES, description=NAME_RULE)],
                    step: Annotated[int | None, Form(ge=0, le=INT64_MAX)] = None,
                    metadata: Annotated[Text | None, Form(max_length=MAX_JSON_TEXT, description=METADATA)] = None,
                    ) -> ArtifactOut:
    meta = _metadata(metadata)
    limits.check_json_size(meta, settings, "metadata")
    media_type = file.content_type
    if media_type is not None and (len(media_type) > NAME_LENGTH or text_problem(media_type)):
        raise invalid(("body", "file"), f"content type: at most {NAME_LENGTH} characters", media_type)
    try:
        relative = artifact_store.artifact_relative_path(run.experiment_id, run.id, name, step)
        stored = artifact_store.store(settings.artifact_root, relative, file.file, settings.max_artifact_bytes)
    except BadName as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    except artifact_store.TooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from error
    artifact = session.scalar(select(Artifact).where(Artifact.run_key == run.key, Artifact.path == relative))
    created = artifact is None
    try:
        if artifact is None:
            artifact = Artifact(run_key=run.key, path=relative)
            session.add(artifact)
        artifact.kind, artifact.name, artifact.step, artifact.meta = kind, name, step, meta
        artifact.media_type = media_type
        artifact.size_bytes, artifact.sha256, artifact.created_at = stored.size_bytes, stored.sha256, utcnow()
        session.flush()
        answer = artifact_out(artifact, run.id)
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
    query = select(Artifact).where(Artifact.run_key == run.key)
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    rows, total = records.paginate(session, query.order_by(Artifact.step, Artifact.name, Artifact.id), limit, offset)
    return Page[ArtifactOut](items=[artifact_out(a, run.id) for a in rows], total=total, limit=limit, offset=offset)


@router.get("/runs/{run_id}/artifacts/{artifact_id}/file", response_class=FileResponse,
            responses={404: errors.error("no such run or artifact, or its file is gone"),
                       200: {"description": "the file", "content": {"application/octet-stream": {}}}})
def download_artifact(run: ReadableRun, session: SessionDep, settings: SettingsDep,
                      artifact_id: Annotated[int, Path(ge=1, le=INT32_MAX)]) -> FileResponse:
    artifact = session.scalar(select(Artifact).where(Artifact.run_key == run.key, Artifact.id == artifact_id))
    path = settings.artifact_root / artifact.path if artifact is not None else None
    if artifact is None or path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"artifact_id: run {run.id!r} has no artifact {artifact_id}")
    media_type, disposition = artifact_store.served_type(path)  # never the uploader's type: no HTML/SVG inline
    return FileResponse(path, media_type=media_type, filename=artifact.name, content_disposition_type=disposition)


def _metadata(text: str | None) -> dict[str, Any]:
    """The `metadata` form field as a JSON object, checked like every JsonObject field (`check_json_object`)."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise invalid(("body", "metadata"), f"not valid JSON ({str(error)[:200]})", text[:200]) from None
    if not isinstance(value, dict):
        raise invalid(("body", "metadata"), "must be a JSON object", text[:200])
    try:
        return check_json_object(value)  # NaN/Infinity as the contract's strings, as JsonObject fields store them
    except ValueError as error:
        raise invalid(("body", "metadata"), str(error), text[:200]) from None
