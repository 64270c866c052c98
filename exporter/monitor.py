"""`TrainingMonitor`: what a trainer creates, logs to every step, and finishes."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from prometheus_client import CollectorRegistry
from trainmon.client.config import ClientConfig
from trainmon.client.methods import RunMethods
from trainmon.client.recorder import RunRecorder, resolve_run_id
from trainmon.client.records import record_kinds
from trainmon.common.settings import NOT_GIVEN
from trainmon.common.statuses import final_status

from .collectors import build_sampled_collectors
from .config import ExporterConfig, resolve_config, resolve_port
from .distributed import Topology, detect_topology
from .distributed import resolve_run_id as resolve_topology_run_id
from .exit_hooks import FinishOnExit
from .health import HealthCollector, HealthCounters
from .phases import Phase, PhaseCollector
from .push import Pusher
from .sampler import Sampler
from .server import MetricsServer, serve_metrics
from .training import DEFAULT_BUFFER_SIZE, PointSink, TrainingCollector

log = logging.getLogger("trainmon.exporter")

_time = time.time
_ = NOT_GIVEN  # every setting argument defaults to NOT_GIVEN: an explicit value always beats TRAINMON_*


def trainmon_version() -> str:
    try:
        from importlib.metadata import version

        return version("trainmon")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0+unknown"


class TrainingMonitor(RunMethods):
    """Exports a training run's metrics to Prometheus (scrape and/or Pushgateway).

    >>> with TrainingMonitor("resnet50", "vision", port=0) as monitor:  # doctest: +SKIP
    ...     for step in range(1000):
    ...         monitor.log_metrics({"loss": loss, "lr": lr}, step=step)

    `log_metrics` only appends to a bounded buffer; names, values and aggregates are handled at scrape time
    and by a background drain every 0.25 s. See docs/sdk.md for every argument and TRAINMON_* variable; an
    argument you pass always wins over its variable, even when it equals the default.
    `point_sink` (or the attribute of the same name) receives ``[(key, step, value, wall_time), ...]`` from each
    drain (the metadata API gets its rows through a seam of its own); `on_finish` callables receive the final
    status.
    """

    def __init__(self, experiment_name: str, project_name: str | None = _, *, run_id: str | None = None,
                 port: int | bool | None = _, host: str = _, pushgateway_url: str | None = _,
                 push_interval: float = _, gpu: bool = _, system: bool = _, sample_interval: float = _,
                 strict: bool = _, batch_size: int | None = None, extrema_window: float = _,
                 registry: CollectorRegistry | None = None, keep_push_group: bool = _,
                 nvml_source: object = None, psutil_source: object = None, point_sink: PointSink | None = None,
                 push_job: str = _, buffer_size: int = DEFAULT_BUFFER_SIZE, handle_signals: bool = True,
                 env: Mapping[str, str] | None = None, api_url: str | None = _, api_token: str | None = _,
                 mode: str = _, spool_dir: str | None = _, params: Mapping[str, object] | None = None,
                 tags: Mapping[str, object] | None = None, resume: str | bool | None = None,
                 capture_context: bool = _):
        if not isinstance(experiment_name, str) or not experiment_name.strip():
            raise ValueError(f"experiment_name must be a non-empty string, got {experiment_name!r}")
        if batch_size is not None and (type(batch_size) is not int or batch_size <= 0):  # checked before binding
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if type(buffer_size) is not int or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
        env = os.environ if env is None else env
        self.config: ExporterConfig = resolve_config(
            env, project_name=project_name, port=port, host=host, pushgateway_url=pushgateway_url,
            push_interval=push_interval, push_job=push_job, keep_push_group=keep_push_group, gpu=gpu,
            system=system, sample_interval=sample_interval, strict=strict, extrema_window=extrema_window)
        self.experiment_name = experiment_name
        self.project_name = self.config.project_name
        self.topology: Topology = detect_topology(env)
        run_id = resolve_run_id(run_id, resume)  # resume="<run_id>" continues that run
        self.run_id, self.run_id_source = resolve_topology_run_id(run_id, env, self.topology)
        self.status = "RUNNING"
        self.on_finish: list[Callable[[str], None]] = []
        self._finish_lock = threading.RLock()
        self._finishing = False
        self._warned_after_finish = False
        self.run_labels = {"experiment": experiment_name, "run_id": self.run_id, "rank": str(self.topology.rank)}
        self.registry = registry if registry is not None else CollectorRegistry()

        bind_port = resolve_port(self.config.port, self.topology.local_rank)
        self.server: MetricsServer | None = None
        if bind_port is not None:
            self.server = serve_metrics(self.registry, self.config.host, bind_port)
        self.port: int | None = self.server.port if self.server else None
        self.metrics_url: str | None = self.server.url if self.server else None

        self.counters = HealthCounters(record_kinds())
        self.training = TrainingCollector(
            self.run_labels, self._info_labels(), extrema_window=self.config.extrema_window,
            batch_size=batch_size, buffer_size=buffer_size, count_dropped=self.counters.count_dropped)
        self.training.sink = point_sink
        # The metadata API side (trainmon.client): run registration, points via the sink, records, final status.
        self.recorder = RunRecorder(
            ClientConfig.resolve(env, api_url=api_url, api_token=api_token, mode=mode, spool_dir=spool_dir,
                                 params=params, tags=tags, resume=resume, capture_context=capture_context),
            experiment=experiment_name, run_id=self.run_id, project=self.project_name, rank=self.topology.rank,
            world_size=self.topology.world_size, exporter_url=self.metrics_url, on_drop=self.counters.count_dropped,
            on_checkpoint=self.training.record_checkpoint, on_reject=self.counters.count_rejected)
        if self.recorder.enabled:
            # Rows (one per log call, no object per point) straight to the shipper's memory queue; `point_sink`
            # stays the caller's own seam.
            self.training.row_sink = self.recorder.shipper.offer_rows
            self.on_finish.append(self.recorder.finish)
        self.sampled = build_sampled_collectors(
            self.run_labels, gpu=self.config.gpu, system=self.config.system, local_rank=self.topology.local_rank,
            local_world_size=self.topology.local_world_size, nvml_source=nvml_source, psutil_source=psutil_source)
        self.phases = PhaseCollector(self.run_labels)
        self.health = HealthCollector(self.run_labels, self.counters, [self.training, *self.sampled],
                                      lambda: self.training.last_buffered)
        collectors = [self.training, self.phases, *self.sampled, self.health]
        for collector in collectors:
            self.registry.register(collector)

        # The hot path: two bound methods, no attribute chains.
        self._append = self.training.buffer.append
        self._next_seq = self.training.sequence.__next__
        if self.config.strict:
            self.log_metrics = self._log_metrics_strict  # type: ignore[method-assign]

        self.sampler = Sampler(self.sampled, self.config.sample_interval, self.training.drain)
        self.sampler.start()
        self.pusher: Pusher | None = None
        if self.config.pushgateway_url:
            push_registry = CollectorRegistry()  # separate registry, as client_python advises for pushes
            for collector in collectors:
                push_registry.register(collector)
            self.pusher = Pusher(self.config.pushgateway_url, push_registry, self.config.push_job,
                                 {"run_id": self.run_id, "rank": str(self.topology.rank)},
                                 self.config.push_interval, self.counters.count_push)
            self.pusher.start()
        self._exit_hooks = FinishOnExit(self.finish, handle_signals)

    # --- properties ---

    @property
    def point_sink(self) -> PointSink | None:
        """Receives the ``(key, step, value, wall_time)`` points of each drain (a caller's seam; the metadata API
        takes rows through `TrainingCollector.row_sink`)."""
        return self.training.sink

    @point_sink.setter
    def point_sink(self, sink: PointSink | None) -> None:
        self.training.sink = sink

    @property
    def step(self) -> int | None:
        """The last step aggregated (drained), None before the first."""
        return self.training.step

    # --- logging ---

    def log_metrics(self, metrics: Mapping[str, object], step: int | None = None, *,
                    samples: float | None = None, tokens: float | None = None) -> None:
        """Record `metrics` at `step` (None: previous step + 1). Costs well under a microsecond."""
        try:
            self._append((metrics.copy(), step, _time(), self._next_seq(), samples, tokens))
        except AttributeError:  # a Mapping without .copy(); anything else is a TypeError here
            self._append((_as_dict(metrics), step, _time(), self._next_seq(), samples, tokens))

    def _log_metrics_strict(self, metrics: Mapping[str, object], step: int | None = None, *,
                            samples: float | None = None, tokens: float | None = None) -> None:
        """strict=True: validate eagerly, raising ValueError for a name or value the default path rejects."""
        TrainingCollector.validate(metrics, step)
        self._append((dict(metrics), step, _time(), self._next_seq(), samples, tokens))

    def phase(self, name: str, *, waiting: bool = False) -> Phase:
        """``with monitor.phase("forward"): ...`` adds the block's wall time to ``trainmon_phase_seconds{phase}``.

        Mark time spent waiting for other ranks (collectives, barriers) with ``waiting=True`` (or a name starting
        with ``wait``/``sync``/``comm``/``barrier``/``allreduce``): the straggler alert compares each rank's
        compute time per step, which synchronous training does not even out."""
        return self.phases.phase(name, waiting)

    def flush(self) -> None:
        """Aggregate everything logged so far now (also hands points to the sink)."""
        self.training.drain()

    def count_dropped(self, reason: str, count: int = 1) -> None:
        """Count points dropped downstream (e.g. by a sink's spool) in trainmon_exporter_dropped_points_total."""
        self.counters.count_dropped(reason, count)

    # --- lifecycle ---

    def finish(self, status: str = "COMPLETED") -> None:
        """End the run: final drain, stop threads, final push or group delete, the metadata side (`on_finish`),
        stop the server. Idempotent."""
        status = final_status(status)
        with self._finish_lock:
            if self._finishing:
                return
            self._finishing = True
            self.status = status
            self._append = self._ignore_after_finish  # the drain below takes everything logged before
        try:
            self.sampler.stop()
            self.training.drain()
            if self.pusher is not None:
                self.pusher.finish(delete=status == "COMPLETED" and not self.config.keep_push_group)
            # The metadata side first (final status, or this rank leaving service discovery), then the server:
            # Prometheus never sees a rank down that is still listed as a target.
            for callback in self.on_finish:
                _quietly(lambda callback=callback: callback(status), "an on_finish callback")
            if self.server is not None:
                self.server.stop()
            for collector in self.sampled:
                _quietly(collector.close, f"closing the {collector.name} collector")
        finally:
            self._exit_hooks.remove()

    def _ignore_after_finish(self, point: tuple) -> None:
        if not self._warned_after_finish:
            self._warned_after_finish = True
            log.warning("trainmon: log_metrics after finish() is ignored (run %s is %s)", self.run_id, self.status)

    @property
    def finished(self) -> bool:
        return self._finishing

    def __enter__(self) -> TrainingMonitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.finish("COMPLETED" if exc_type is None else "FAILED")

    def __repr__(self) -> str:
        return (f"TrainingMonitor(experiment={self.experiment_name!r}, run_id={self.run_id!r}, "
                f"rank={self.topology.rank}, metrics_url={self.metrics_url!r}, status={self.status!r})")

    # --- internals ---

    def _info_labels(self) -> dict[str, str]:
        return {"project": self.project_name or "", "host": socket.gethostname(),
                "local_rank": str(self.topology.local_rank), "world_size": str(self.topology.world_size),
                "version": trainmon_version(), "port": str(self.port or "")}


def _as_dict(metrics: object) -> dict:
    if isinstance(metrics, Mapping):
        return dict(metrics)
    raise TypeError(f"log_metrics expects a mapping of name -> number, got {type(metrics).__name__}")


def _quietly(action: Callable[[], object], what: str) -> None:
    try:
        action()
    except Exception as error:  # noqa: BLE001 - finishing must complete
        log.warning("trainmon: %s failed: %s", what, error)
