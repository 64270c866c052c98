"""Rank/local rank/world size from launcher variables; the shared run id; ports per local rank."""

from __future__ import annotations

import logging
import re
import socket

import pytest
import requests
from trainmon.exporter import TrainingMonitor
from trainmon.exporter.config import DEFAULT_BASE_PORT, resolve_port
from trainmon.exporter.distributed import Topology, detect_topology, generate_run_id, resolve_run_id


@pytest.mark.parametrize(("env", "expected"), [
    ({}, Topology(0, 0, 1, 1, "single")),
    ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, Topology(5, 1, 8, 4, "torchrun")),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, Topology(3, 1, 4, 2, "openmpi")),
    ({"PMI_RANK": "2", "PMI_SIZE": "3"}, Topology(2, 2, 3, 3, "mpich")),
    ({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "7", "SLURM_TASKS_PER_NODE": "4(x1),3",
      "SLURM_NODEID": "1"}, Topology(5, 1, 7, 3, "slurm")),
    ({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
      "SLURM_NODEID": "0"}, Topology(0, 0, 8, 4, "slurm")),
])
def test_launchers(env: dict[str, str], expected: Topology) -> None:
    assert detect_topology(env) == expected


def test_torchrun_wins_inside_slurm_and_mpi() -> None:
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1", "OMPI_COMM_WORLD_RANK": "0",
           "OMPI_COMM_WORLD_SIZE": "1"}
    assert detect_topology(env).launcher == "torchrun"
    assert detect_topology({k: v for k, v in env.items() if k[0] not in "RLW"}).launcher == "openmpi"


@pytest.mark.parametrize(("env", "message"), [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"RANK": "4", "WORLD_SIZE": "2"}, "inconsistent torchrun"),
])
def test_bad_environment_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        detect_topology(env)


@pytest.mark.parametrize(("env", "run_id", "source"), [
    ({"TRAINMON_RUN_ID": "shared-1", "TORCHELASTIC_RUN_ID": "abc", "SLURM_JOB_ID": "9"}, "shared-1",
     "TRAINMON_RUN_ID"),
    ({"TORCHELASTIC_RUN_ID": "f00d-42", "SLURM_JOB_ID": "9"}, "f00d-42", "TORCHELASTIC_RUN_ID"),
    ({"TORCHELASTIC_RUN_ID": "none", "SLURM_JOB_ID": "9"}, "slurm-9", "SLURM_JOB_ID"),
    ({"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "2"}, "slurm-9.2", "SLURM_JOB_ID"),
    ({"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "4294967294"}, "slurm-9", "SLURM_JOB_ID"),  # the batch step
    ({"PMIX_NAMESPACE": "prterun-node1-1234@1"}, "prterun-node1-1234_1", "PMIX_NAMESPACE"),
])
def test_ranks_of_one_job_share_the_run_id(env: dict[str, str], run_id: str, source: str) -> None:
    for rank in range(3):
        topology = Topology(rank, rank, 3, 3, "torchrun")
        assert resolve_run_id(None, env, topology) == (run_id, source)


def test_argument_wins_and_is_checked() -> None:
    assert resolve_run_id("mine", {"TRAINMON_RUN_ID": "env"}) == ("mine", "argument")
    with pytest.raises(ValueError, match="run_id"):
        resolve_run_id("has space", {})
    with pytest.raises(ValueError, match="TRAINMON_RUN_ID"):
        resolve_run_id(None, {"TRAINMON_RUN_ID": "a/b"})


def test_without_a_shared_id_each_rank_generates_its_own_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
        single = resolve_run_id(None, {}, Topology())
        assert not caplog.records
        ids = {resolve_run_id(None, {}, Topology(rank, rank, 2, 2, "torchrun"))[0] for rank in range(2)}
    assert single[1] == "generated"
    assert len(ids) == 2
    assert "TRAINMON_RUN_ID" in caplog.records[0].getMessage()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", generate_run_id())


def test_each_local_rank_gets_base_port_plus_local_rank() -> None:
    assert resolve_port(None, 0) == DEFAULT_BASE_PORT
    assert resolve_port(None, 3) == DEFAULT_BASE_PORT + 3
    assert resolve_port(9000, 2) == 9002
    assert resolve_port(0, 2) == 0
    assert resolve_port(False, 2) is None


def _two_free_ports() -> int:
    """A port p such that p and p + 1 are both free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            base = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
        return base
    raise RuntimeError("no two consecutive free ports")


def test_two_local_ranks_share_the_run_and_serve_on_consecutive_ports() -> None:
    base = _two_free_ports()
    monitors = []
    try:
        for rank in range(2):
            env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                   "TORCHELASTIC_RUN_ID": "elastic-42", "TRAINMON_PORT": str(base)}
            monitors.append(TrainingMonitor("ddp", env=env, gpu=False, system=True, handle_signals=False))
        for rank, monitor in enumerate(monitors):
            monitor.log_metrics({"loss": float(rank)}, 0)
            assert monitor.port == base + rank
            text = requests.get(monitor.metrics_url, timeout=5).text
            assert f'trainmon_metric_value{{experiment="ddp",key="loss",rank="{rank}",run_id="elastic-42"}} ' \
                   f'{float(rank)}' in text
            assert f'local_rank="{rank}"' in text and 'world_size="2"' in text
        assert "system" in {c.name for c in monitors[0].sampled}
        assert "system" not in {c.name for c in monitors[1].sampled}  # host series from local rank 0 only
    finally:
        for monitor in monitors:
            monitor.finish()
