"""Checkpoints (models): `POST /api/runs/{run_id}/checkpoints` registers one;
`GET /api/models/{experiment_id}` lists an experiment's, newest first (paginated).

Registering a name the run already has replaces its fields (a re-save after a resume; a replayed request is a
no-op) and answers 200; a new name answers 201. Names are plain file names (`trainmon.common.files.check_name`):
a path separator or '..' -> 400.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from trainmon.common.files import BadName, check_name

from ..deps import ReadableExperiment, SessionDep, WritableRun
from ..models import Checkpoint
from ..repositories import records
from ..schemas import CheckpointIn, CheckpointOut, ExperimentModels, RunId
from .experiments import Limit, Offset

router = APIRouter(prefix="/api", tags=["checkpoints"])


def checkpoint_out(checkpoint: Checkpoint) -> CheckpointOut:
    return CheckpointOut(id=checkpoint.id, run_id=checkpoint.run_id, name=checkpoint.name, step=checkpoint.step,
                         epoch=checkpoint.epoch, uri=checkpoint.uri, size_bytes=checkpoint.size_bytes,
                         sha256=checkpoint.sha256, metrics=checkpoint.metrics or {}, created_at=checkpoint.created_at)


@router.post("/runs/{run_id}/checkpoints", response_model=CheckpointOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"description": "the name was registered before; its fields were replaced"},
                        400: {"description": "the name has a path separator or '..'"}})
def register_checkpoint(body: CheckpointIn, run: WritableRun, session: SessionDep,
                        response: Response) -> CheckpointOut:
    try:
        check_name(body.name)
    except BadName as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    fields = body.model_dump()
    fields["sha256"] = body.sha256.lower()
    fields["metrics"] = body.metrics or {}
    checkpoint, created = records.upsert_checkpoint(session, run.id, fields)
    answer = checkpoint_out(checkpoint)
    session.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
    return answer


@router.get("/models/{experiment_id}", response_model=ExperimentModels)
def experiment_models(experiment: ReadableExperiment, session: SessionDep, limit: Limit = 50, offset: Offset = 0,
                      run_id: RunId | None = None) -> ExperimentModels:
    """The experiment's checkpoints, newest first; filter by `run_id`."""
    checkpoints, total = records.experiment_checkpoints(session, experiment.id, limit, offset, run_id)
    return ExperimentModels(experiment_id=experiment.id, items=[checkpoint_out(c) for c in checkpoints],
                            total=total, limit=limit, offset=offset)
