"""Checkpoints (models) of a run, and their files.

- `POST /api/runs/{run_id}/checkpoints` registers one (`name`, `uri`, `size_bytes`, `sha256`, ...): a name the
  run registered before is replaced (200, same id; a new `sha256` forgets the stored file, see below), a new
  name answers 201. Names are plain file names (`trainmon.common.files.check_name`): a path or '..' -> 400.
- `GET /api/runs/{run_id}/checkpoints` lists the run's, newest first (filters `name`, `step`).
- `POST /api/runs/{run_id}/checkpoints/{checkpoint_id}/file` (multipart field `file`) uploads its bytes: they
  stream into a temporary file under the artifact root (`experiments/<experiment_id>/checkpoints/<run_id>/
  <name>`, no copy through /tmp, no database transaction held meanwhile), and only when their SHA-256 equals the
  registered one (else 422 "sha256 mismatch", nothing stored) are they renamed over that path (the file of an
  earlier registration of the name is replaced only then) and the path recorded. Over MAX_CHECKPOINT_BYTES -> 413.
- `GET /api/runs/{run_id}/checkpoints/{checkpoint_id}/file` downloads it (`application/octet-stream`, attachment,
  `ETag: "<sha256 hex>"` and `Repr-Digest: sha-256=:<base64>:`); 404 for a checkpoint registered by URI only.
- `GET /api/models/{experiment_id}` lists an experiment's checkpoints, newest first (paginated).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from trainmon.common.files import MAX_NAME_BYTES, BadName, check_name

from .. import deps
from ..deps import ProjectQuery, ReadableExperiment, ReadableRun, RunIdPath, SessionDep, SettingsDep, WritableRun
from ..models import Checkpoint
from ..repositories import checkpoints as checkpoint_repo
from ..schemas import CheckpointIn, CheckpointOut, ExperimentModels, Page, RunId, Text
from ..schemas.base import INT32_MAX, INT64_MAX
from ..services import artifact_store, limits, upload_stream
from .experiments import Limit, Offset

router = APIRouter(prefix="/api", tags=["checkpoints"])
CheckpointId = Annotated[int, Path(ge=1, le=INT32_MAX)]
FIELD = "file"
MULTIPART_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD], "properties": {FIELD: {"type": "string", "format": "binary"}}}}}}}


def checkpoint_out(checkpoint: Checkpoint, run_id: str) -> CheckpointOut:
    return CheckpointOut(id=checkpoint.id, run_id=run_id, name=checkpoint.name, step=checkpoint.step,
                         epoch=checkpoint.epoch, uri=checkpoint.uri, size_bytes=checkpoint.size_bytes,
                         sha256=checkpoint.sha256, metrics=checkpoint.metrics or {}, created_at=checkpoint.created_at,
                         stored=checkpoint.path is not None, path=checkpoint.path)


@router.post("/runs/{run_id}/checkpoints", response_model=CheckpointOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": CheckpointOut,
                              "description": "the name was registered before; its fields were replaced"},
                        400: {"description": "the name has a path separator or '..'"},
                        413: {"description": "metrics over MAX_PARAMS_BYTES as JSON, or body over MAX_BODY_BYTES"}})
def register_checkpoint(body: CheckpointIn, run: WritableRun, session: SessionDep, settings: SettingsDep,
                        response: Response) -> CheckpointOut:
    limits.check_json_size(body.metrics, settings, "metrics")
    try:
        check_name(body.name)
    except BadName as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    fields = body.model_dump()
    fields["sha256"] = body.sha256.lower()
    fields["metrics"] = body.metrics or {}
    checkpoint, created = checkpoint_repo.upsert(session, run.key, fields)
    answer = checkpoint_out(checkpoint, run.id)
    session.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
    return answer


@router.get("/runs/{run_id}/checkpoints", response_model=Page[CheckpointOut])
def list_checkpoints(run: ReadableRun, session: SessionDep, limit: Limit = 50, offset: Offset = 0,
                     name: Annotated[Text | None, Query(min_length=1, max_length=MAX_NAME_BYTES)] = None,
                     step: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None) -> Page[CheckpointOut]:
    """The run's checkpoints, newest (last registered) first; filter by `name` and `step`."""
    rows, total = checkpoint_repo.of_run(session, run.key, limit, offset, name, step)
    return Page[CheckpointOut](items=[checkpoint_out(c, run.id) for c in rows], total=total, limit=limit,
                               offset=offset)


@dataclass(frozen=True)
class _Target:
    run_key: int
    run_id: str
    checkpoint_id: int
    sha256: str
    relative_path: str


def _upload_target(request: Request, authorization: str | None, run_id: str, project: str | None,
                   checkpoint_id: int) -> _Target:
    """Who may upload, and where to: in a read transaction of its own, ended before the body is read (on SQLite a
    write transaction would hold the database's write lock for the whole upload)."""
    with request.app.state.read_sessions() as session:
        principal = deps.get_principal(request, session, authorization)
        run = deps.resolve_run(session, principal, run_id, project, write=True)
        checkpoint = _checkpoint_of(session, run.key, run.id, checkpoint_id)
        try:
            relative = artifact_store.checkpoint_relative_path(run.experiment_id, run.id, checkpoint.name)
        except BadName as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
        return _Target(run.key, run.id, checkpoint.id, checkpoint.sha256, relative)


def _record_stored(request: Request, target: _Target, incoming: artifact_store.IncomingFile) -> CheckpointOut:
    """Put the checked file in place and record its path, in a short write transaction; 409 when the checkpoint
    was registered again with other bytes meanwhile."""
    with request.app.state.write_sessions() as session:
        checkpoint = _checkpoint_of(session, target.run_key, target.run_id, target.checkpoint_id, for_update=True)
        if checkpoint.sha256 != target.sha256:
            raise HTTPException(status.HTTP_409_CONFLICT, f"checkpoint_id: checkpoint {target.checkpoint_id} was "
                                                          "registered again with another sha256 during the upload")
        incoming.install()
        checkpoint.path = target.relative_path
        session.flush()
        answer = checkpoint_out(checkpoint, target.run_id)
        session.commit()
        return answer


@router.post("/runs/{run_id}/checkpoints/{checkpoint_id}/file", response_model=CheckpointOut,
             openapi_extra=MULTIPART_BODY,
             responses={404: {"description": "no such run or checkpoint"},
                        409: {"description": "the checkpoint was registered again during the upload"},
                        413: {"description": "file over MAX_CHECKPOINT_BYTES"},
                        422: {"description": "sha256 mismatch (nothing stored), or no `file` field"}})
async def upload_checkpoint_file(request: Request, run_id: RunIdPath, checkpoint_id: CheckpointId,
                                 settings: SettingsDep, project: ProjectQuery = None,
                                 authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
                                 ) -> CheckpointOut:
    """Upload the registered checkpoint's bytes (multipart field `file`); they must have its `sha256`."""
    target = await run_in_threadpool(_upload_target, request, authorization, run_id, project, checkpoint_id)
    path = artifact_store.inside_root(settings.artifact_root, target.relative_path)
    incoming = await run_in_threadpool(artifact_store.IncomingFile, path, settings.max_checkpoint_bytes)
    try:
        await upload_stream.receive_file_field(request, FIELD, incoming)
        await run_in_threadpool(incoming.check, target.sha256)
        return await run_in_threadpool(_record_stored, request, target, incoming)
    except upload_stream.IncompleteBody as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    except upload_stream.BadUpload as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    except artifact_store.TooLarge as error:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error)) from error
    except artifact_store.DigestMismatch as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    finally:
        await run_in_threadpool(incoming.discard)  # the temporary file, unless installed


@router.get("/runs/{run_id}/checkpoints/{checkpoint_id}/file", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}},
                       404: {"description": "no such checkpoint, registered by URI only, or its file is gone"}})
def download_checkpoint_file(run: ReadableRun, session: SessionDep, settings: SettingsDep,
                             checkpoint_id: CheckpointId) -> FileResponse:
    """The uploaded file; `ETag` (hex) and `Repr-Digest` (RFC 9530) carry its SHA-256 for the client to verify."""
    checkpoint = _checkpoint_of(session, run.key, run.id, checkpoint_id)
    if checkpoint.path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"checkpoint_id: checkpoint {checkpoint_id} ({checkpoint.name!r}) is registered by uri "
                            f"only ({checkpoint.uri}); its file was not uploaded")
    path = artifact_store.inside_root(settings.artifact_root, checkpoint.path)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"checkpoint_id: the stored file of checkpoint {checkpoint_id} is missing")
    digest = base64.b64encode(bytes.fromhex(checkpoint.sha256)).decode()
    return FileResponse(path, media_type="application/octet-stream", filename=checkpoint.name,
                        content_disposition_type="attachment",
                        headers={"ETag": f'"{checkpoint.sha256}"', "Repr-Digest": f"sha-256=:{digest}:"})


def _checkpoint_of(session: Session, run_key: int, run_id: str, checkpoint_id: int,
                   for_update: bool = False) -> Checkpoint:
    checkpoint = checkpoint_repo.get(session, run_key, checkpoint_id, for_update)
    if checkpoint is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"checkpoint_id: run {run_id!r} has no checkpoint "
                                                       f"{checkpoint_id}")
    return checkpoint


@router.get("/models/{experiment_id}", response_model=ExperimentModels)
def experiment_models(experiment: ReadableExperiment, session: SessionDep, limit: Limit = 50, offset: Offset = 0,
                      run_id: RunId | None = None) -> ExperimentModels:
    """The experiment's checkpoints, newest first; filter by `run_id`."""
    rows, total = checkpoint_repo.of_experiment(session, experiment.id, limit, offset, run_id)
    return ExperimentModels(experiment_id=experiment.id, items=[checkpoint_out(c, r) for c, r in rows],
                            total=total, limit=limit, offset=offset)
