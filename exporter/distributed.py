"""Rank, local rank and world size from torchrun, MPI and Slurm variables; the run id all ranks share."""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("trainmon.exporter")

# (launcher, rank, local rank, world size, local world size), first complete match wins: torchrun sets RANK even
# when it runs inside Slurm or under mpirun, and mpirun inside a Slurm allocation sets OMPI_* over SLURM_*.
LAUNCHERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("mpich", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", "MPI_LOCALNRANKS"),
    ("slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", ""),
)

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    launcher: str = "single"


def detect_topology(env: Mapping[str, str] | None = None) -> Topology:
    """The topology from the first launcher whose rank variable is set (see LAUNCHERS)."""
    env = os.environ if env is None else env
    for launcher, rank_var, local_var, size_var, local_size_var in LAUNCHERS:
        if env.get(rank_var, "") == "":
            continue
        rank = _int(env, rank_var)
        world_size = _int(env, size_var, default=rank + 1)
        local_rank = _int(env, local_var, default=rank if launcher != "slurm" else 0)
        if local_size_var:
            local_world_size = _int(env, local_size_var, default=local_rank + 1)
        else:
            local_world_size = _slurm_local_tasks(env, default=local_rank + 1)
        if not (0 <= rank < world_size and 0 <= local_rank < local_world_size):
            raise ValueError(f"inconsistent {launcher} environment: rank {rank} of {world_size}, "
                             f"local rank {local_rank} of {local_world_size}")
        return Topology(rank, local_rank, world_size, local_world_size, launcher)
    return Topology()


def resolve_run_id(run_id: str | None = None, env: Mapping[str, str] | None = None,
                   topology: Topology | None = None) -> tuple[str, str]:
    """(run_id, where it came from): the argument, TRAINMON_RUN_ID, TORCHELASTIC_RUN_ID, SLURM_JOB_ID (+ step),
    PMIX_NAMESPACE (Open MPI), else generated.

    A generated id is per process: ranks of a job launched without any shared id each get their own, with a
    warning on multi-rank jobs telling to set TRAINMON_RUN_ID (the only way to agree without communication).
    """
    env = os.environ if env is None else env
    if run_id is not None:
        return _checked(str(run_id), "run_id"), "argument"
    if env.get("TRAINMON_RUN_ID"):
        return _checked(env["TRAINMON_RUN_ID"], "TRAINMON_RUN_ID"), "TRAINMON_RUN_ID"
    elastic = env.get("TORCHELASTIC_RUN_ID", "")
    if elastic and elastic.lower() != "none":  # torchrun's default rdzv id is the literal "none"
        return _sanitize(elastic), "TORCHELASTIC_RUN_ID"
    if env.get("SLURM_JOB_ID"):
        step = env.get("SLURM_STEP_ID", "")
        suffix = f".{step}" if step.isdigit() and int(step) < 0xFFFFFFF0 else ""
        return _sanitize(f"slurm-{env['SLURM_JOB_ID']}{suffix}"), "SLURM_JOB_ID"
    if env.get("PMIX_NAMESPACE"):
        return _sanitize(env["PMIX_NAMESPACE"]), "PMIX_NAMESPACE"
    topology = topology or Topology()
    if topology.world_size > 1:
        log.warning("trainmon: no shared run id in the environment (TRAINMON_RUN_ID, TORCHELASTIC_RUN_ID, "
                    "SLURM_JOB_ID); rank %d generates its own. Set TRAINMON_RUN_ID to the same value on every "
                    "rank to group them as one run.", topology.rank)
    return generate_run_id(), "generated"


def generate_run_id() -> str:
    """A readable, unique id: UTC start time plus 6 random hex digits, e.g. 20260101-120000-1a2b3c."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _checked(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > 128 or _SAFE_ID.search(value):
        raise ValueError(f"{what} must be 1-128 characters of A-Z a-z 0-9 _ . : -, got {value!r}")
    return value


def _sanitize(value: str) -> str:
    return _SAFE_ID.sub("_", value.strip())[:128] or generate_run_id()


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name, "")
    if raw == "" and default is not None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def _slurm_local_tasks(env: Mapping[str, str], default: int) -> int:
    """Tasks on this node from SLURM_STEP_TASKS_PER_NODE/SLURM_TASKS_PER_NODE ("2(x3),1") and SLURM_NODEID."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
    counts: list[int] = []
    for part in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            return default
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    node = _int(env, "SLURM_NODEID", default=0)
    return counts[node] if 0 <= node < len(counts) else default
