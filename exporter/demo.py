"""`make demo`: a simulated training run exported to a local Prometheus (and Pushgateway).

    python -m trainmon.exporter.demo [--steps N] [--duration S] [--rate STEPS_PER_S] [--query-every S]

The run logs a noisy decaying loss, accuracy, a warmup + cosine learning rate, epochs, samples and tokens. When
the `prometheus` / `prometheus-pushgateway` binaries exist, it starts them on 127.0.0.1 free ports in a temp
directory from `prometheus/prometheus.demo.yml`, prints their URLs and a live PromQL result every few seconds,
and stops them on exit or Ctrl-C. Without a torch install, GPU or network.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from .monitor import TrainingMonitor

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "prometheus" / "prometheus.demo.yml"
FALLBACK_CONFIG = """global: {scrape_interval: 2s, scrape_timeout: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: trainmon-demo-trainer
    honor_labels: true
    static_configs: [{targets: ['${TRAINER_TARGET}']}]
  - job_name: pushgateway
    honor_labels: true
    static_configs: [{targets: [${PUSHGATEWAY_TARGETS}]}]
"""
QUERY = 'trainmon_metric_value{job="trainmon-demo-trainer",key="train_loss"}'


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
    """Local Prometheus and Pushgateway child processes in a temp directory; `stop()` ends them all."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="trainmon-demo-"))
        self.children: list[subprocess.Popen] = []
        self.prometheus_url: str | None = None
        self.pushgateway_url: str | None = None

    def start_pushgateway(self) -> None:
        binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
        if not binary:
            print("demo: no prometheus-pushgateway binary; skipping the Pushgateway (apt install "
                  "prometheus-pushgateway)")
            return
        port = free_port()
        self._spawn([binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                     f"--persistence.file={self.workdir / 'pushgateway.data'}"], "pushgateway.log")
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(f"{url}/-/ready", self.children[-1]):
            self.pushgateway_url = url

    def start_prometheus(self, trainer_target: str) -> None:
        binary = shutil.which("prometheus")
        if not binary:
            print("demo: no prometheus binary; the exporter still serves /metrics (apt install prometheus)")
            return
        template = DEMO_CONFIG.read_text() if DEMO_CONFIG.exists() else FALLBACK_CONFIG
        pushgateway = f"'{self.pushgateway_url.split('//')[1]}'" if self.pushgateway_url else ""
        config = string.Template(template).substitute(TRAINER_TARGET=trainer_target, PUSHGATEWAY_TARGETS=pushgateway)
        (self.workdir / "prometheus.yml").write_text(config)
        port = free_port()
        self._spawn([binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                     "--log.level=warn"], "prometheus.log")
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(f"{url}/-/ready", self.children[-1]):
            self.prometheus_url = url

    def query(self, promql: str) -> list[dict]:
        if not self.prometheus_url:
            return []
        answer = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5).json()
        return answer.get("data", {}).get("result", []) if answer.get("status") == "success" else []

    def stop(self) -> None:
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
        self.children.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _spawn(self, argv: Sequence[str], log_name: str) -> None:
        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - the child keeps it; closed with the process
        self.children.append(subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
        log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, child: subprocess.Popen, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return True
        time.sleep(0.1)
    print(f"demo: {child.args[0]} did not become ready (exit code {child.poll()})")
    return False


def format_result(result: list[dict]) -> str:
    lines = []
    for series in result:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(series["metric"].items()) if k in ("key", "run_id"))
        lines.append(f"{series['metric'].get('__name__', '')}{{{labels}}} = {float(series['value'][1]):.4f}")
    return "; ".join(lines)


@contextlib.contextmanager
def sigint_as_keyboard_interrupt() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, so the child servers are always stopped."""
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(steps: int | None, duration: float | None, rate: float, query_every: float) -> int:
    servers = Servers()
    printed_promql = False
    try:
        with sigint_as_keyboard_interrupt():
            servers.start_pushgateway()
            monitor = TrainingMonitor("demo-resnet", "trainmon-demo", port=0, pushgateway_url=servers.pushgateway_url,
                                      push_interval=5.0, batch_size=64, gpu=False, sample_interval=2.0)
            with monitor:
                servers.start_prometheus(f"127.0.0.1:{monitor.port}")
                print(f"demo: run {monitor.run_id} exporting at {monitor.metrics_url}")
                if servers.prometheus_url:
                    print(f"demo: Prometheus at {servers.prometheus_url}  (graph: {servers.prometheus_url}/graph"
                          f"?g0.expr={requests.utils.quote(QUERY)})")
                if servers.pushgateway_url:
                    print(f"demo: Pushgateway at {servers.pushgateway_url}")
                print("demo: training; Ctrl-C stops" + (f" after {steps} steps" if steps else "")
                      + (f" or {duration:g} s" if duration else ""))
                simulation = Simulation(total_steps=steps or 5000)
                started = time.monotonic()
                next_query = started + query_every
                step = 0
                while (steps is None or step < steps) and (duration is None or time.monotonic() - started < duration):
                    monitor.log_metrics(simulation.metrics(step), step, tokens=64 * 512)
                    if step % 1000 == 999:
                        monitor.log_checkpoint(f"step-{step}")
                    step += 1
                    if time.monotonic() >= next_query:
                        printed_promql |= _print_query(servers)
                        next_query = time.monotonic() + query_every
                    time.sleep(max(0.0, started + step / rate - time.monotonic()))
                deadline = time.monotonic() + 20
                while servers.prometheus_url and not printed_promql and time.monotonic() < deadline:
                    time.sleep(0.5)
                    printed_promql = _print_query(servers, quiet=True)
                print(f"demo: finished after {step} steps")
    except KeyboardInterrupt:
        print("\ndemo: interrupted, stopping")
    finally:
        servers.stop()
        print("demo: servers stopped")
    return 0


def _print_query(servers: Servers, quiet: bool = False) -> bool:
    if not servers.prometheus_url:
        return False
    result = servers.query(QUERY)
    if result:
        print(f"demo: PromQL {QUERY} -> {format_result(result)}")
        rate = servers.query('rate(trainmon_steps_total{job="trainmon-demo-trainer"}[30s])')
        if rate:
            print(f"demo: PromQL rate(trainmon_steps_total[30s]) -> {float(rate[0]['value'][1]):.1f} steps/s")
        return True
    if not quiet:
        print(f"demo: PromQL {QUERY} -> (no sample yet; Prometheus scrapes every 2 s)")
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainmon.exporter.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: run on)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--rate", type=float, default=20.0, help="steps per second (default 20)")
    parser.add_argument("--query-every", type=float, default=5.0, help="seconds between PromQL prints")
    args = parser.parse_args(argv)
    if args.rate <= 0 or (args.steps is not None and args.steps <= 0) or (args.duration is not None
                                                                           and args.duration <= 0):
        parser.error("--rate, --steps and --duration must be positive")
    return run(args.steps, args.duration, args.rate, args.query_every)


if __name__ == "__main__":
    sys.exit(main())
