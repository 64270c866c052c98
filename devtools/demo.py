"""`make demo`: the main job on embedded defaults (SQLite, no Docker): a simulated trainer, the metadata API,
Prometheus with the repository's rules, Pushgateway and Alertmanager, all on 127.0.0.1.

    python -m devtools.demo [--steps N] [--duration S] [--rate STEPS_PER_S] [--query-every S] [--data-dir DIR]

(from the repository root: devtools/ is repository tooling, not part of the installed package).

The trainer logs a noisy decaying loss, accuracy, a warmup + cosine learning rate, epochs and tokens, plus
params, tags, a note, checkpoints, an image and a histogram (numpy/pillow; skipped without them). With the
`[server]` extra it starts the metadata API (SQLite and artifacts under --data-dir, default ./demo-data), the
trainer ships to it, and Prometheus (the repository's prometheus.yml and rules, 2 s intervals) discovers the
trainer through the API's /api/sd; Alertmanager runs when its binary exists (alertmanager/render.py, notifications
off unless ENABLE_NOTIFICATIONS is set). Without the extra: Prometheus scrapes the trainer directly
(prometheus/prometheus.demo.yml). Every missing binary is skipped with a hint.

Ctrl-C (or SIGTERM) ends the demo the way it is meant to end: the run is finished COMPLETED (the demo trains
until stopped), the compare table is printed, and every child server is stopped; a second Ctrl-C during that
wrap-up finishes the run FAILED and stops the servers at once. An error in the loop finishes it FAILED.
Exit code 0 after a normal or Ctrl-C end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import random
import shutil
import signal
import string
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from trainmon.exporter import TrainingMonitor

from devtools import REPO
from devtools.procs import API_COMMAND, ManagedProcess, api_environment, free_port, http_ok, port_is_free

DEMO_CONFIG = REPO / "prometheus" / "prometheus.demo.yml"
FALLBACK_CONFIG = """global: {scrape_interval: 2s, scrape_timeout: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: trainmon-demo-trainer
    honor_labels: true
    static_configs: [{targets: ['${TRAINER_TARGET}']}]
  - job_name: pushgateway
    honor_labels: true
    static_configs: [{targets: [${PUSHGATEWAY_TARGETS}]}]
"""
EXPERIMENT, PROJECT = "demo-resnet", "trainmon-demo"
STATIC_JOB, DISCOVERED_JOB = "trainmon-demo-trainer", "trainmon-trainers"  # prometheus.demo.yml / prometheus.yml
INTERVAL = "2s"
DASHBOARD_PORT = 5000  # the API (and its dashboard) where a user expects it, when that port is free
COMPARE_KEYS = ("train_loss", "train_accuracy", "val_loss")
PARAMS = {"model": "resnet50", "optimizer": {"name": "adamw", "lr": 3e-4, "weight_decay": 0.05},
          "batch_size": 64, "seq_len": 512, "warmup_steps": 100, "seed": 0}


@dataclass
class Simulation:
    """A plausible training run: loss decays with noise, accuracy follows, lr warms up then follows a cosine."""

    total_steps: int = 5000
    warmup_steps: int = 100
    peak_lr: float = 3e-4
    steps_per_epoch: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.peak_lr * 0.5 * (1 + math.cos(math.pi * progress))

    def metrics(self, step: int) -> dict[str, float]:
        clean = 0.35 + 2.2 * math.exp(-step / (self.total_steps / 6))
        loss = clean * (1 + self.rng.gauss(0, 0.06))
        accuracy = min(0.999, max(0.0, 1 - clean / 2.6 + self.rng.gauss(0, 0.01)))
        values = {"train/loss": loss, "train/accuracy": accuracy, "lr": self.lr(step),
                  "grad_norm": abs(self.rng.gauss(1.0, 0.3)) * clean, "epoch": step // self.steps_per_epoch}
        if step % 100 == 99:
            values["val/loss"] = clean * 1.08
        return values


class Servers:
    """The demo's child processes (API, Pushgateway, Alertmanager, Prometheus) in a temp dir; `stop()` ends them."""

    def __init__(self, data_dir: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="trainmon-demo-"))
        self.data_dir = data_dir
        self.children: list[ManagedProcess] = []
        self.api_url: str | None = None
        self.prometheus_url: str | None = None
        self.pushgateway_url: str | None = None
        self.alertmanager_url: str | None = None

    # --- starting ---

    def start_api(self) -> None:
        """The metadata API on SQLite (`<data_dir>/trainmon.db`, artifacts next to it); needs the [server] extra."""
        missing = [name for name in ("fastapi", "uvicorn", "sqlalchemy", "yaml") if not _installed(name)]
        if missing:
            print(f"demo: {', '.join(missing)} not installed; running without the metadata API "
                  "(pip install -e '.[demo]')")
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = DASHBOARD_PORT if port_is_free(DASHBOARD_PORT) else free_port()
        data_dir = self.data_dir.resolve()
        env = api_environment(f"sqlite:///{data_dir / 'trainmon.db'}", data_dir, port)
        self.api_url = self._spawn("metadata API", port, [*API_COMMAND, "--port", str(port)], "/readyz", env=env)

    def start_pushgateway(self) -> None:
        binary = _which("prometheus-pushgateway", "pushgateway",
                        missing="skipping the Pushgateway (apt install prometheus-pushgateway)")
        if binary:
            port = free_port()
            self.pushgateway_url = self._spawn("pushgateway", port, [
                binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                f"--persistence.file={self.workdir / 'pushgateway.data'}"])

    def start_alertmanager(self) -> None:
        """Alertmanager with alertmanager/render.py's config (only with the API: the rules come with it)."""
        binary = _which("prometheus-alertmanager", "alertmanager",
                        missing="alerts are evaluated but not routed (apt install prometheus-alertmanager)")
        if not binary:
            return
        from devtools.stack_render import alertmanager_renderer  # noqa: PLC0415 - needs PyYAML

        config_dir = self.workdir / "alertmanager"
        try:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # its log line is noise here
                alertmanager_renderer().render(config_dir, env=os.environ)
        except Exception as error:  # noqa: BLE001 - the demo goes on without Alertmanager
            print(f"demo: cannot render the Alertmanager config ({error}); skipping Alertmanager")
            return
        port = free_port()
        self.alertmanager_url = self._spawn("alertmanager", port, [
            binary, f"--config.file={config_dir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'alertmanager-data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=", "--log.level=warn"])

    def start_prometheus(self, trainer_target: str) -> None:
        """With the API: the repository's prometheus.yml and rules, rendered for local servers (http_sd
        discovers the trainer). Without: prometheus.demo.yml scraping `trainer_target` directly."""
        binary = _which("prometheus", missing="the exporter still serves /metrics (apt install prometheus)")
        if not binary:
            return
        if self.api_url:
            from devtools.stack_render import render_prometheus_config  # noqa: PLC0415 - needs PyYAML

            config = render_prometheus_config(api_url=self.api_url, pushgateway_url=self.pushgateway_url,
                                              alertmanager_url=self.alertmanager_url, interval=INTERVAL)
        else:
            template = DEMO_CONFIG.read_text() if DEMO_CONFIG.exists() else FALLBACK_CONFIG
            pushgateway = f"'{self.pushgateway_url.split('//')[1]}'" if self.pushgateway_url else ""
            config = string.Template(template).substitute(TRAINER_TARGET=trainer_target,
                                                          PUSHGATEWAY_TARGETS=pushgateway)
        (self.workdir / "prometheus.yml").write_text(config)
        port = free_port()
        self.prometheus_url = self._spawn("prometheus", port, [
            binary, f"--config.file={self.workdir / 'prometheus.yml'}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])

    @property
    def trainer_job(self) -> str:
        return DISCOVERED_JOB if self.api_url else STATIC_JOB

    # --- querying ---

    def query(self, promql: str) -> list[dict]:
        if not self.prometheus_url:
            return []
        with contextlib.suppress(requests.RequestException, ValueError):
            answer = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5).json()
            return answer.get("data", {}).get("result", []) if answer.get("status") == "success" else []
        return []

    # --- stopping ---

    def stop(self) -> None:
        """SIGTERM every child (newest first: Prometheus before the API it scrapes), then wait; SIGKILL laggards."""
        for child in reversed(self.children):
            child.terminate()
        for child in reversed(self.children):
            child.stop(timeout=10)
        self.children.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _spawn(self, name: str, port: int, argv: Sequence[str], ready_path: str = "/-/ready",
               env: Mapping[str, str] | None = None) -> str | None:
        """Start `argv` (listening on `port`); its base URL once `ready_path` answers 200, None when it did not."""
        child = ManagedProcess(argv, self.workdir / f"{name.replace(' ', '-')}.log", env=env, cwd=self.workdir,
                               die_with_parent=True)
        self.children.append(child)
        print(f"demo: started {name} (pid {child.pid})")
        url = f"http://127.0.0.1:{port}"
        try:
            child.wait_ready(http_ok(f"{url}{ready_path}"), timeout=60, what=f"{name} ready")
        except (TimeoutError, RuntimeError):  # stopped by wait_ready
            print(f"demo: {name} did not become ready (exit code {child.proc.returncode}); its log ends:\n"
                  f"{child.log_tail(1500)}")
            return None
        return url


def _which(*names: str, missing: str) -> str | None:
    """The first of `names` on PATH; None, after printing `missing` (what the demo does without it), when none is."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    print(f"demo: no {names[0]} binary; {missing}")
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or the module blocked (sys.modules[name] = None)
        return False


def format_result(result: list[dict]) -> str:
    lines = []
    for series in result:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(series["metric"].items()) if k in ("key", "run_id"))
        lines.append(f"{series['metric'].get('__name__', '')}{{{labels}}} = {float(series['value'][1]):.4f}")
    return "; ".join(lines)


def format_table(rows: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """compare_experiments rows as a fixed-width text table: run, status, then last/min per key."""
    columns = ["run_id", "status", *[f"{key}.{part}" for key in keys for part in ("last", "min")]]
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def sigint_as_keyboard_interrupt() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, so the run is finished and the children stopped."""
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Extras:
    """Params, tags, a note, checkpoints, an image and a histogram: the SDK side of the demo run."""

    def __init__(self, monitor: TrainingMonitor, checkpoint_every: int) -> None:
        self.monitor = monitor
        self.checkpoint_every = checkpoint_every
        self.numpy: Any = None
        if _installed("numpy") and _installed("PIL"):
            import numpy  # noqa: PLC0415 - a dev dependency, optional for the demo

            self.numpy = numpy
        else:
            print("demo: numpy/pillow not installed; skipping the image and histogram (pip install numpy pillow)")

    def start(self) -> None:
        self.monitor.log_params(PARAMS)
        self.monitor.add_tag("source", "make demo")
        self.monitor.add_tag("dataset", "synthetic")
        self.monitor.add_note("Simulated run started by `make demo`: loss decays, lr warms up then follows a cosine.")
        self.media(0)

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        if step and step % self.checkpoint_every == 0:
            self.checkpoint(step, metrics)
            self.media(step)

    def checkpoint(self, step: int, metrics: Mapping[str, float]) -> None:
        state = {"step": step, "weights": [round(math.sin(step + i), 6) for i in range(16)]}
        self.monitor.save_checkpoint(state, step=step, epoch=int(metrics.get("epoch", 0)), name="demo",
                                     metrics={"train_loss": metrics["train/loss"]}, keep_last=2)

    def media(self, step: int) -> None:
        if self.numpy is None:
            return
        np = self.numpy
        rng = np.random.default_rng(step)
        y, x = np.mgrid[0:64, 0:64] / 63.0
        image = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * (x + y) + step / 100)], axis=-1)
        image = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)
        self.monitor.log_image("attention", image, step=step)
        self.monitor.log_histogram("fc_weights", rng.normal(0, 1 / math.sqrt(1 + step / 500), 4096), step=step)


def run(steps: int | None, duration: float | None, rate: float, query_every: float, data_dir: Path) -> int:
    servers = Servers(data_dir)
    monitor: TrainingMonitor | None = None
    wrapping_up = False
    try:
        with sigint_as_keyboard_interrupt():
            servers.start_api()
            servers.start_pushgateway()
            if servers.api_url:
                servers.start_alertmanager()
            env = {**os.environ, "TRAINMON_CHECKPOINT_ROOT": str(data_dir.resolve() / "experiments")}
            monitor = TrainingMonitor(EXPERIMENT, PROJECT, port=0, pushgateway_url=servers.pushgateway_url,
                                      push_interval=5.0, batch_size=64, gpu=False, sample_interval=2.0,
                                      handle_signals=False, api_url=servers.api_url, env=env,
                                      mode="online" if servers.api_url else "disabled",  # never a TRAINMON_API_URL
                                      spool_dir=str(data_dir.resolve() / "spool") if servers.api_url else None)
            servers.start_prometheus(f"127.0.0.1:{monitor.port}")
            _print_urls(servers, monitor)
            step = _train(monitor, servers, steps, duration, rate, query_every)
            wrapping_up = True
            _wait_for_promql(servers, monitor)
            monitor.finish("COMPLETED")
            print(f"demo: run {monitor.run_id} finished COMPLETED after {step} steps")
            _print_compare(monitor, servers)
    except KeyboardInterrupt:
        unfinished = monitor is not None and not monitor.finished
        print("\ndemo: interrupted " + ("again" if wrapping_up else "while starting")
              + ("; finishing the run FAILED" if unfinished else "") + "; stopping now")
        if monitor is not None:
            monitor.finish("FAILED")
    finally:
        if monitor is not None and not monitor.finished:  # an error escaped: the run failed
            monitor.finish("FAILED")
        servers.stop()
        print("demo: servers stopped" + (f"; data kept in {data_dir} (delete it to start fresh)"
                                         if servers.api_url else ""))
    return 0


def _train(monitor: TrainingMonitor, servers: Servers, steps: int | None, duration: float | None, rate: float,
           query_every: float) -> int:
    """The training loop; Ctrl-C ends it (the demo's normal end). Returns the number of steps logged."""
    print("demo: training; Ctrl-C stops" + (f" after {steps} steps" if steps else "")
          + (f" or {duration:g} s" if duration else ""))
    planned = steps or (math.ceil(duration * rate) if duration else 5000)
    simulation = Simulation(total_steps=planned)
    extras = Extras(monitor, checkpoint_every=max(1, min(500, planned // 2)))  # short runs: mid-way and at the end
    started = time.monotonic()
    next_query = started + query_every
    step = 0
    try:
        if servers.api_url:
            extras.start()
        while (steps is None or step < steps) and (duration is None or time.monotonic() - started < duration):
            metrics = simulation.metrics(step)
            monitor.log_metrics(metrics, step, tokens=64 * 512)
            if servers.api_url:
                extras.step(step, metrics)
            step += 1
            if time.monotonic() >= next_query:
                _print_query(servers)
                next_query = time.monotonic() + query_every
            time.sleep(max(0.0, started + step / rate - time.monotonic()))
    except KeyboardInterrupt:
        print(f"\ndemo: interrupted at step {step}; finishing the run COMPLETED (Ctrl-C is how the demo ends; "
              "press it again to stop at once)")
    last = step - 1
    if servers.api_url and step and not (last and last % extras.checkpoint_every == 0):  # not saved just now
        extras.checkpoint(last, simulation.metrics(last))
    return step


def _print_urls(servers: Servers, monitor: TrainingMonitor) -> None:
    if servers.api_url:
        print(f"demo: dashboard at {servers.api_url}/  (this run: {servers.api_url}/runs/"
              f"{quote(monitor.run_id, safe='')})")
    print(f"demo: run {monitor.run_id} exporting at {monitor.metrics_url}")
    if servers.prometheus_url:
        query = _loss_query(servers)
        print(f"demo: Prometheus at {servers.prometheus_url}  (graph: {servers.prometheus_url}/graph"
              f"?g0.expr={quote(query)}&g0.tab=0&g0.range_input=5m)")
    if servers.api_url:
        run = f"{servers.api_url}/api/runs/{quote(monitor.run_id, safe='')}"
        print(f"demo: metadata API at {servers.api_url} (SQLite {servers.data_dir / 'trainmon.db'}):")
        print(f"demo:   experiments  {servers.api_url}/api/experiments")
        print(f"demo:   this run     {run}")
        print(f"demo:   train_loss   {run}/metrics/train_loss?max_points=100  (M4-reduced)")
    if servers.pushgateway_url:
        print(f"demo: Pushgateway at {servers.pushgateway_url}")
    if servers.alertmanager_url:
        print(f"demo: Alertmanager at {servers.alertmanager_url}  (notifications off unless ENABLE_NOTIFICATIONS)")


def _loss_query(servers: Servers) -> str:
    return f'trainmon_metric_value{{job="{servers.trainer_job}",key="train_loss"}}'


def _print_query(servers: Servers, quiet: bool = False) -> bool:
    """Print the live loss (and steps/s, firing alerts) from Prometheus; True when a loss sample came back."""
    if not servers.prometheus_url:
        return False
    query = _loss_query(servers)
    result = servers.query(query)
    if not result:
        if not quiet:
            print(f"demo: PromQL {query} -> (no sample yet; Prometheus scrapes every {INTERVAL})")
        return False
    print(f"demo: PromQL {query} -> {format_result(result)}")
    rate = servers.query(f'rate(trainmon_steps_total{{job="{servers.trainer_job}"}}[10s])')
    if rate:
        print(f"demo: PromQL rate(trainmon_steps_total[10s]) -> {float(rate[0]['value'][1]):.1f} steps/s")
    firing = sorted({series["metric"].get("alertname", "?") for series in servers.query('ALERTS{alertstate="firing"}')})
    print(f"demo: firing alerts: {', '.join(firing) if firing else 'none'}")
    return True


def _wait_for_promql(servers: Servers, monitor: TrainingMonitor, timeout: float = 30.0) -> None:
    """Short runs end before the first scrape (and, with the API, discovery): wait for one PromQL answer."""
    if not servers.prometheus_url:
        return
    deadline = time.monotonic() + timeout
    while not _print_query(servers, quiet=True):
        if time.monotonic() > deadline:
            print(f"demo: no PromQL result within {timeout:g} s (targets: {servers.prometheus_url}/targets)")
            return
        monitor.flush()
        time.sleep(0.5)


def _print_compare(monitor: TrainingMonitor, servers: Servers) -> None:
    if not servers.api_url:
        return
    try:
        rows = monitor.compare_experiments(EXPERIMENT, keys=list(COMPARE_KEYS))
    except Exception as error:  # noqa: BLE001 - the demo still ends cleanly
        print(f"demo: compare_experiments failed: {error}")
        return
    print(f"demo: compare_experiments({EXPERIMENT!r}), every run of the experiment in {servers.data_dir}:")
    print(format_table(rows, COMPARE_KEYS))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: run on)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--rate", type=float, default=20.0, help="steps per second (default 20)")
    parser.add_argument("--query-every", type=float, default=5.0, help="seconds between PromQL prints")
    parser.add_argument("--data-dir", type=Path, default=Path("demo-data"),
                        help="the API's SQLite file, artifacts, checkpoints and spool (default ./demo-data)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or (args.steps is not None and args.steps <= 0) or (args.duration is not None
                                                                           and args.duration <= 0):
        parser.error("--rate, --steps and --duration must be positive")
    return run(args.steps, args.duration, args.rate, args.query_every, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
