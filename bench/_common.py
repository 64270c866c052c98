"""What the bench scripts share: the repository root on sys.path (for `devtools`), a hanging listener, alternating
rounds, quantiles, and the median/ratio lines against a floor measured in the same run.

The scripts run as `python bench/<name>.py`, which puts this folder on sys.path: `from _common import ...`, first
(isort puts it before the first-party `devtools`), then `from devtools.procs import free_port, run_api` (the
metadata API as a real subprocess) and the like.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # devtools/ lives at the repository root, outside the installed package

T = TypeVar("T")


def hanging_listener() -> tuple[socket.socket, str]:
    """A listening socket nobody accepts from: connections open, requests never get an answer; and its URL.
    Close the socket when done."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


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
        ratio = f"{medians[mode] / medians[floor]:.3f}" if medians[floor] else "n/a (a floor of 0)"
        print(f"{line}  ratio vs {floor} {ratio}  (n={len(values)})")
    return medians


def paired_ratios(samples: Mapping[str, Sequence[float]], floor: str) -> dict[str, float]:
    """Each mode's median over rounds of its value / the `floor` mode's value in the same round: steadier than the
    ratio of medians when the machine drifts from round to round."""
    return {mode: statistics.median(value / base for value, base in zip(values, samples[floor], strict=True))
            for mode, values in samples.items()}


def cpu_reading(pid: int, children: bool = False) -> dict[tuple[int, int], float]:
    """CPU seconds so far of each thread of process `pid` (and of its live children when `children`: a PostgreSQL
    postmaster and its backends), by (pid, thread id); `cpu_seconds_since` takes the difference of two.

    On Linux each thread's run time comes from `/proc/PID/task/TID/schedstat` in nanoseconds; user + system time
    (psutil) counts in clock ticks of 10 ms, a quantum of 16 us a request over 640 requests, as large as the
    differences the request benches look for. Elsewhere: psutil's user + system time of each process."""
    import psutil

    process = psutil.Process(pid)
    members = [process, *(process.children(recursive=True) if children else [])]
    found: dict[tuple[int, int], float] = {}
    for member in members:
        tasks = Path(f"/proc/{member.pid}/task")
        try:
            for task in tasks.iterdir():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
                    found[(member.pid, int(task.name))] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, NotADirectoryError):  # no /proc (not Linux), or the process is gone
            with contextlib.suppress(psutil.NoSuchProcess):
                times = member.cpu_times()
                found[(member.pid, 0)] = times.user + times.system
    return found


def cpu_seconds_since(before: Mapping[tuple[int, int], float], pid: int, children: bool = False) -> float:
    """CPU seconds `pid`'s threads (and its children's) used since the `cpu_reading` `before`: threads started
    since count whole; a thread that ended in between loses its time since `before` (rare: the servers keep
    their threads)."""
    return sum(seconds - before.get(thread, 0.0) for thread, seconds in cpu_reading(pid, children).items())


@contextlib.contextmanager
def bench_database(postgres: bool, workdir: Path, name: str = "bench.db") -> Iterator[tuple[str, int | None]]:
    """(database URL, PostgreSQL postmaster pid or None): a SQLite file in `workdir`, or with `postgres` a
    throwaway PostgreSQL cluster started the way the tests start one (`tests/support/procs.run_postgres`, in a
    temporary directory of its own: as root the cluster runs as another user, who must be able to reach it)."""
    if not postgres:
        yield f"sqlite:///{workdir / name}", None
        return
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    from support.procs import run_postgres

    with tempfile.TemporaryDirectory(prefix="trainmon-bench-pg-") as folder, run_postgres(Path(folder)) as url:
        yield url, int((Path(folder) / "pgdata" / "postmaster.pid").read_text().split()[0])
