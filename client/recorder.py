"""``RunRecorder``: the metadata side of one monitor: run registration, the shipper and spool, final status.

Public SDK methods (params, tags, notes, logs, checkpoints, images, histograms, graphs, compare) live in
`trainmon.client.methods`; each builds a typed record (`trainmon.client.records`) and hands it to `submit`.

DDP: every rank creates/joins the shared run and logs points (as its own series: the rank is a field of each
metric batch) and log lines (prefixed ``[rank N]``); params, tags, notes and checkpoint registration are rank 0's
only (other ranks' records are ignored, but ``save_checkpoint`` still writes the file it is asked for); the final
status is rank 0's, except FAILED, which any rank reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainmon.common.statuses import final_status
from trainmon.common.wire import json_safe

from . import discovery, pending_status
from .api_client import ApiClient, ApiError, ApiUnavailable, quote_segment
from .config import ClientConfig, default_spool_dir
from .context import capture_context
from .delivery import Outcome, deliver
from .records import Record, RegisterRun, SetStatus
from .shipper import Shipper
from .spool import MemorySpool, Spool, SpoolLocked

log = logging.getLogger("trainmon.client")

REGISTRATION_TIMEOUT = (1.0, 3.0)
MEMORY_SPOOL_BYTES = 64 * 1024**2


def resolve_run_id(run_id: str | None, resume: str | bool | None) -> str | None:
    """``resume="<run_id>"`` continues that run; otherwise the monitor's own run id."""
    return resume if isinstance(resume, str) and resume else run_id


class RunRecorder:
    """The metadata side of one monitor: run lifecycle, records and points through the shipper."""

    def __init__(self, config: ClientConfig, *, experiment: str, run_id: str, project: str | None = None,
                 rank: int = 0, world_size: int = 1, host: str | None = None, exporter_url: str | None = None,
                 on_drop: Callable[[str, int], None] | None = None,
                 on_checkpoint: Callable[[], None] | None = None, on_reject: Callable[[str], None] | None = None):
        self.config = config
        self.experiment = experiment
        self.project = project
        self.run_id = run_id
        self.rank = rank
        self.world_size = world_size
        self.experiment_id: int | None = None
        self.exporter_url = exporter_url
        self.on_checkpoint = on_checkpoint
        self.params: dict[str, Any] = {}
        self.shipper: Shipper | None = None
        self.client: ApiClient | None = None
        self._finished = False
        if config.mode == "online" and not config.api_url and config.discover:
            self._zero_config()
        online = config.mode == "online" and bool(config.api_url)
        if config.mode == "online" and not config.api_url:
            log.info("trainmon: no metadata API (api_url=None): Prometheus-only")
        if not online and config.mode != "offline":
            return
        self.params = dict(json_safe(config.params or {}))
        body = json_safe(self._run_body(host, exporter_url))
        registration = RegisterRun(run_id, body)
        registered = False
        if online:
            self.client = ApiClient(str(config.api_url), config.api_token)
            self.client.project = project
            registered = self._register_now(registration)
            if registered is None:
                return
        try:
            spool: Spool | MemorySpool = _open_spool(config, run_id, rank, experiment, body)
        except OSError as error:  # never stop the trainer: ship straight from memory, loudly
            if self.client is None:
                log.error("trainmon: cannot write a spool under %s (%s) and the run is offline: metadata recording "
                          "is OFF for this run", config.spool_dir or default_spool_dir(), error)
                return
            log.error("trainmon: cannot write a spool under %s (%s): shipping from memory only (%d MiB); if the API "
                      "is down longer than that holds, data is dropped and counted", config.spool_dir or
                      default_spool_dir(), error, MEMORY_SPOOL_BYTES // 2**20)
            spool = MemorySpool(Path(config.spool_dir or default_spool_dir()) / dir_label(run_id),
                                max_bytes=MEMORY_SPOOL_BYTES)
        if isinstance(spool, Spool):
            pending_status.reserve(spool.directory, run_id)
        self.shipper = Shipper(self.client, spool, run_id, batch_points=config.batch_points,
                               batch_interval=config.batch_interval, queue_points=config.queue_points,
                               heartbeat_interval=config.heartbeat_interval, on_drop=on_drop, run_body=body,
                               on_reject=on_reject, rank=self.rank)
        if not registered:
            self.shipper.offer(registration)

    def _zero_config(self) -> None:
        """No API URL given: a local trainmon API if one answers, else record this run locally (one line says
        where, and how to see it)."""
        config = self.config
        found = discovery.local_api()
        if found is not None:
            config.api_url = found
            log.info("trainmon: recording run %s in the metadata API at %s", self.run_id, found)
            return
        config.mode = "offline"
        folder = Path(config.spool_dir or Path.cwd() / discovery.LOCAL_RUNS_DIR).absolute()
        config.spool_dir = folder
        if self.rank == 0:
            view = (f"run `trainmon serve` in {folder.parent} and open {discovery.DEFAULT_LOCAL_API}"
                    if folder.name == discovery.LOCAL_RUNS_DIR else f"`trainmon sync {folder} --api-url URL`")
            log.warning("trainmon: no metadata API at %s; recording run %s locally in %s. To see it: %s",
                        discovery.DEFAULT_LOCAL_API, self.run_id, folder, view)

    def _run_body(self, host: str | None, exporter_url: str | None) -> dict[str, Any]:
        config = self.config
        # git state, command, versions, GPUs (client/context.py); opt out: TRAINMON_CAPTURE_CONTEXT=false
        context = capture_context(world_size=self.world_size) if config.capture_context else None
        body = {
            "experiment": self.experiment, "project": self.project, "run_id": self.run_id,
            "host": host or socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)[:65_536],
            "git_commit": (context or {}).get("git", {}).get("commit") or _git_commit(), "rank": self.rank,
            "world_size": self.world_size,
            "exporter_url": exporter_url,
            "params": dict(self.params) or None,  # a copy: log_params updates self.params later
            "tags": {str(k): str(v) for k, v in (config.tags or {}).items()} or None,
            "context": context,
        }  # no project: the token's (or the default)
        return {key: value for key, value in body.items() if value is not None}

    def _register_now(self, registration: RegisterRun) -> bool | None:
        """Create (or join) the run with a short timeout, to learn the experiment id. False: queue it (API
        unreachable, slow, 5xx, 401/403); None: the API refuses this run for good (metadata recording off)."""
        assert self.client is not None
        with self.client.timeout_of(REGISTRATION_TIMEOUT):
            result = deliver(self.client, registration)
            if (result.outcome is Outcome.REJECTED and result.status == 422 and "context" in registration.body
                    and "context" in result.message):  # an API older than the `context` field refuses it
                log.info("trainmon: the metadata API does not take the run context; registering without it")
                registration.body.pop("context")
                result = deliver(self.client, registration)
        if result.outcome is Outcome.DELIVERED:
            answer = result.answer if isinstance(result.answer, dict) else {}
            self.experiment_id = answer.get("experiment_id")
            self.client.project = answer.get("project") or self.project
            return True
        if result.outcome is Outcome.REJECTED:
            log.error("trainmon: the metadata API rejected run %s (%s); metadata recording is OFF for this run "
                      "(Prometheus metrics are not affected)", self.run_id, result.error)
            self._close_client()
            return None
        log.warning("trainmon: cannot register run %s now (%s); it is queued and spooled", self.run_id, result.error)
        return False

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    @property
    def enabled(self) -> bool:
        return self.shipper is not None

    # --- what the public methods hand over ---

    def offer_log_line(self, line: dict[str, Any]) -> None:
        if self.shipper is not None:
            self.shipper.offer_log_line(line)

    def submit(self, record: Record) -> bool:
        """Queue a record for delivery; False (ignored) when recording is off, finished, or the record is rank 0's
        and this is another rank."""
        if record.rank0_only and self.rank != 0:
            log.debug("trainmon: rank %d: params, tags, notes and checkpoints are recorded by rank 0", self.rank)
            return False
        if self.shipper is None or self._finished:
            return False
        self.shipper.offer(record)
        return True

    def experiment_dir(self) -> Path:
        """``<checkpoint_root>/<experiment_id>`` (the experiment's name until the API told its id)."""
        label = str(self.experiment_id) if self.experiment_id is not None else dir_label(self.experiment)
        return Path(self.config.checkpoint_root).absolute() / label

    def api(self) -> ApiClient:
        """A client for reads (the recorder's own, or a new one from the settings)."""
        if self.client is not None:
            return self.client
        if not self.config.api_url:
            raise RuntimeError("this needs the metadata API (api_url / TRAINMON_API_URL)")
        return ApiClient(str(self.config.api_url), self.config.api_token)

    # --- lifecycle ---

    def flush(self, timeout: float = 30.0, deliver: bool = True) -> bool:
        """Wait until what was handed over so far is delivered (or, ``deliver=False``, delivered or spooled)."""
        return self.shipper is None or self.shipper.flush(timeout, deliver)

    def finish(self, status: str = "COMPLETED", timeout: float | None = None) -> bool:
        """Flush (bounded by ``timeout``, default ``flush_timeout``), set the final status, close. Idempotent.

        True when everything reached the API (or, offline, the spool)."""
        status = final_status(status)
        if self._finished or self.shipper is None:
            self._finished = True
            return True
        self._finished = True
        shipper = self.shipper
        delivered = shipper.stop(self.config.flush_timeout if timeout is None else timeout)
        if self.rank == 0 or status != "COMPLETED":
            delivered = self._send_final_status(status) and delivered
        else:
            self._leave_discovery()
        shipper.close(0)
        return delivered or self.config.mode == "offline"

    def _leave_discovery(self) -> None:
        """A rank that ends before the run does leaves /api/sd, so Prometheus stops scraping it instead of calling
        it down. One short attempt, never spooled: a replay after a restart would remove a new registration."""
        if self.client is None or not self.exporter_url:
            return
        try:
            with self.client.timeout_of(REGISTRATION_TIMEOUT):
                self.client.request("DELETE", f"/api/runs/{quote_segment(self.run_id)}/endpoints/{int(self.rank)}")
        except (ApiError, ApiUnavailable) as error:
            log.info("trainmon: rank %d could not leave service discovery (%s); Prometheus drops it when the run "
                     "ends", self.rank, error)

    def _send_final_status(self, status: str) -> bool:
        """Straight to the API (not behind a spooled backlog); when it cannot take it now, into
        ``final-status.json`` beside the spool, which `trainmon sync` delivers. True when delivered."""
        assert self.shipper is not None
        record = SetStatus(self.run_id, status)
        if self.client is not None:
            with self.client.timeout_of(REGISTRATION_TIMEOUT):
                result = deliver(self.client, record, self.shipper.run_body)
            if result.outcome is Outcome.DELIVERED:
                return True
            if result.outcome is Outcome.REJECTED:
                self.shipper.dead_letters.add(record.to_json(), result.status, result.message)
                log.warning("trainmon: the metadata API refused the final status %s of run %s: %s", status,
                            self.run_id, result.message)
                return False
        if pending_status.save(self.shipper.spool.directory, self.run_id, status):
            if self.client is not None:
                log.warning("trainmon: the final status %s of run %s waits in %s; it is delivered by: trainmon sync %s",
                            status, self.run_id, self.shipper.spool.directory, self.shipper.spool.directory)
            return False
        log.error("trainmon: the final status %s of run %s could not be delivered nor written to %s", status,
                  self.run_id, self.shipper.spool.directory)
        return False


def _open_spool(config: ClientConfig, run_id: str, rank: int, experiment: str, run_body: dict[str, Any]) -> Spool:
    root = Path(config.spool_dir) if config.spool_dir else default_spool_dir()
    meta = {"api_url": config.api_url, "run_id": run_id, "rank": rank, "experiment": experiment,
            "created": time.time(), "run": run_body}
    name = f"{dir_label(run_id)}-rank{rank}"
    try:
        return Spool(root / name, max_bytes=config.spool_max_bytes, meta=meta)
    except SpoolLocked:
        return Spool(root / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}", max_bytes=config.spool_max_bytes,
                     meta=meta)


def dir_label(text: str) -> str:
    """`text` as a safe folder name."""
    label = "".join(c if c.isalnum() or c in "_.=-" else "_" for c in str(text)).strip("._")
    return label or "run"


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2)
        if result.returncode == 0:
            return result.stdout.strip()[:64] or None
    return None
