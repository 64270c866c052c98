"""What the bench scripts share: free ports and a hanging listener, the metadata API as a real subprocess,
alternating rounds, quantiles, and the median/ratio lines against a floor measured in the same run.

The scripts run as `python bench/<name>.py`, which puts this folder on sys.path: `from _common import ...`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (also: an address where a server is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hanging_listener() -> tuple[socket.socket, str]:
    """A listening socket nobody accepts from: connections open, requests never get an answer; and its URL.
    Close the socket when done."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


@contextlib.contextmanager
def metadata_api(database_url: str, workdir: Path, log_name: str = "api.log", **settings: str) -> Iterator[str]:
    """`python -m trainmon.metadata_api` over `database_url` on a free loopback port (artifacts and log in
    `workdir`); yields its base URL once /readyz answers 200, stops it on exit. `settings`: upper-case names."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port),
           "LOG_LEVEL": "WARNING", "ARTIFACT_ROOT": str(workdir / "artifacts"), **settings}
    log_path = workdir / log_name
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "trainmon.metadata_api", "--port", str(port)], env=env,
                                   cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, f"{url}/readyz", log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen, url: str, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the metadata API exited: {log_path.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the metadata API was not ready within {timeout:g} s (log: {log_path})")


def alternating_rounds(rounds: int, modes: Mapping[str, Callable[[int], T]], rotate: bool = False,
                       after_round: Callable[[int, dict[str, list[T]]], None] | None = None) -> dict[str, list[T]]:
    """Run every mode once a round, one after the other, so that load from elsewhere hits all of them alike.

    Each mode is called with the round's index; `rotate` starts round i at the i-th mode (no mode always first).
    `after_round(i, results)` is called after each round. Returns each mode's results in round order.
    """
    results: dict[str, list[T]] = {mode: [] for mode in modes}
    order = list(modes)
    for index in range(rounds):
        shift = index % len(order) if rotate else 0
        for mode in order[shift:] + order[:shift]:
            results[mode].append(modes[mode](index))
        if after_round is not None:
            after_round(index, results)
    return results


def quantile(samples: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of `samples`: the nearest-rank value, never interpolated."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_medians(samples: Mapping[str, Sequence[float]], floor: str, unit: str, scale: float = 1.0,
                  digits: int = 1, p90: bool = False) -> dict[str, float]:
    """Print one line per mode: its median (times `scale`) in `unit`, optionally its p90, and the ratio of its
    median to the `floor` mode's, measured in the same run. Returns the medians (unscaled)."""
    medians = {mode: statistics.median(values) for mode, values in samples.items()}
    width = max(len(mode) for mode in samples)
    for mode, values in samples.items():
        line = f"{mode:>{width}}: median {medians[mode] * scale:9.{digits}f} {unit}"
        if p90:
            line += f"  p90 {statistics.quantiles(values, n=10)[-1] * scale:9.{digits}f} {unit}"
        print(f"{line}  ratio vs {floor} {medians[mode] / medians[floor]:.3f}  (n={len(values)})")
    return medians
