"""What shipping history to the metadata API costs the trainer, side by side with the exporter alone.

A loop of fixed-length steps (a fixed amount of CPU work per step, calibrated once: the same in every mode) logs
4 scalars every step, in a fresh process per repetition; for each step length (default 50 us and 200 us), the
modes run in alternating rounds: `floor` (no monitor), `exporter` (TrainingMonitor with the metadata side
disabled), `shipping` (the real metadata API on SQLite in its own process) and `stub` (shipping to a stub API
that answers every request at once and stores nothing: the trainer's own cost of shipping, without an API's
work on the same cores); collectors off throughout. Per mode: the trainer process's CPU over the floor per log
call (all threads: hot path, drain, encoding, HTTP, acknowledgements and finish) and where it went (the loop's
thread, the drain, the shipper thread, finish: all but the loop's thread are measured directly, without a
floor, so they are steadier than the total on a busy machine), the loop's wall time over the floor (slowdown),
and the API process's own CPU per call. Medians.

    .venv/bin/python bench/shipping_cost.py [--calls 50000] [--rounds 5] [--step-us 50,200] [--no-stub]
                                            [--against DIR]

Every step length runs `--calls` calls. `--against DIR` runs another version in the same rounds, for a fair
before/after on a noisy machine: DIR holds a `trainmon` package (e.g. links DIR/trainmon/common, client, exporter
to another checkout's folders); its modes are named `exporter@before`, `shipping@before`, `stub@before`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
from _common import REPO, alternating_rounds, paired_ratios, print_medians

from devtools.procs import run_api

CHILD = r"""
import json, os, sys, tempfile, threading, time
mode, calls, work, url = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def threads_cpu():
    # CPU seconds of each live thread but this one, by name (Linux: /proc; elsewhere: nothing)
    seconds = {}
    for thread in threading.enumerate():
        if thread is threading.current_thread():
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as file:
                fields = file.read().rpartition(")")[2].split()
        except OSError:
            continue
        seconds[thread.name] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


monitor = None
if mode != "floor":
    from trainmon.exporter import TrainingMonitor
    options = dict(port=False, gpu=False, system=False, handle_signals=False, env={})
    if mode == "exporter":
        options.update(mode="disabled")
    else:
        options.update(api_url=url, spool_dir=tempfile.mkdtemp())
    monitor = TrainingMonitor("bench-shipping", **options)
log = monitor.log_metrics if monitor is not None else None
clock = time.perf_counter
before = threads_cpu()
cpu0, main0, wall0 = os.times(), time.thread_time(), clock()
for step in range(calls):
    sum(range(work))
    if log is not None:
        log({"loss": 1.0 / (step + 1), "accuracy": step / calls, "lr": 3e-4, "grad_norm": 0.5}, step=step)
main1 = time.thread_time()
background = {name: seconds - before.get(name, 0.0) for name, seconds in threads_cpu().items()}
cpu_loop = os.times()
if monitor is not None:
    monitor.finish()
cpu1, wall1 = os.times(), clock()
stats = dict(monitor.recorder.shipper.stats) if monitor is not None and monitor.recorder.shipper else {}
total = lambda t: t.user + t.system
print(json.dumps({"cpu": total(cpu1) - total(cpu0), "wall": wall1 - wall0, "main": main1 - main0,
                  "background": background, "finish": total(cpu1) - total(cpu_loop), "stats": stats}))
"""


def calibrate(step_us: float) -> int:
    """How long `sum(range(n))` must be to take ``step_us`` here (best of many runs)."""
    n = 10_000
    best = min(_timed(n) for _ in range(200))
    return max(1, int(n * step_us / 1e6 / best))


def _timed(n: int) -> float:
    started = time.perf_counter()
    sum(range(n))
    return time.perf_counter() - started


def measure(mode: str, calls: int, work: int, url: str, server_cpu: Callable[[], float],
            against: str | None = None) -> dict:
    """One fresh trainer process in `mode` (``<mode>@before``: with `against` first on its path)."""
    mode, _, other = mode.partition("@")
    path = os.pathsep.join(filter(None, [against if other else None, os.environ.get("PYTHONPATH"), str(REPO)]))
    before = server_cpu()
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(calls), str(work), url], capture_output=True,
                            text=True, timeout=600, cwd=REPO, env={**os.environ, "PYTHONPATH": path})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    answer["server"] = server_cpu() - before
    return answer


def listener_cpu(url: str) -> Callable[[], float]:
    """The CPU seconds so far of the process listening at `url` (the API, in its own process)."""
    port = int(url.rsplit(":", 1)[1])
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in process.net_connections("tcp")):
                return lambda: sum(process.cpu_times()[:2])
    raise RuntimeError(f"no process listens at {url}")


@contextlib.contextmanager
def stub_api() -> Iterator[str]:
    """An API stub in this process (idle while a trainer runs): reads each request and answers at once, storing
    nothing; its CPU is this process's."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"run_id": "stub", "experiment_id": 1}' if self.path.startswith("/api/runs?") or \
                self.path == "/api/runs" else b'{"accepted": 0, "duplicate": false}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_DELETE = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def report(step_us: float, calls: int, results: dict[str, list[dict]]) -> dict[str, float]:
    """Print one step length's lines; the medians of the summary."""
    floor_cpu = statistics.median(r["cpu"] for r in results["floor"])
    shipping = [mode for mode in results if mode not in ("floor", "exporter")]  # ... and the other version's
    print(f"\n--- {step_us:.0f} us step, {calls} calls ---")
    print("trainer CPU per log call over the floor (all threads, incl. drain, shipping and finish):")
    over = {mode: [(r["cpu"] - floor_cpu) / calls for r in results[mode]] for mode in ("exporter", *shipping)}
    cpu = print_medians(over, "exporter", "us", scale=1e6, digits=2)
    print("loop wall time (slowdown = ratio - 1):")
    walls = {mode: [r["wall"] for r in values] for mode, values in results.items()}
    print_medians(walls, "floor", "s", digits=3)
    paired = {mode: ratio - 1 for mode, ratio in paired_ratios(walls, "floor").items() if mode != "floor"}
    added = {mode: statistics.median((r["wall"] - e["wall"]) / f["wall"] for r, e, f in
                                     zip(results[mode], results["exporter" + mode.partition("@")[1]
                                                                 + mode.partition("@")[2]], results["floor"],
                                         strict=True))
             for mode in shipping if not mode.startswith("exporter")}
    print("loop slowdown paired within each round (median over rounds of the mode's wall time / the floor's - 1; "
          "steadier than the ratio of medians when the machine drifts): "
          + ", ".join(f"{mode} {value * 100:.1f} %" for mode, value in paired.items())
          + "; over the exporter alone in the same round: "
          + ", ".join(f"{mode} {value * 100:+.1f} points" for mode, value in added.items()))
    print("where it went, per call (medians; threads other than the loop's are measured directly, no floor):")
    floor_main = statistics.median(r["main"] for r in results["floor"])
    for mode in ("exporter", *shipping):
        names = sorted({name for r in results[mode] for name in r["background"]})
        parts = {"loop thread over the floor": [(r["main"] - floor_main) / calls for r in results[mode]],
                 **{name: [r["background"].get(name, 0.0) / calls for r in results[mode]] for name in names},
                 "finish()": [r["finish"] / calls for r in results[mode]],
                 "API process": [r["server"] / calls for r in results[mode]]}
        print(f"  {mode:>15}: " + ", ".join(f"{name} {statistics.median(v) * 1e6:.2f} us"
                                           for name, v in parts.items()))
    for mode in shipping:
        if mode.startswith("exporter"):
            continue
        requests = statistics.median(sum(v for k, v in r["stats"].items() if k.startswith("sent_"))
                                     for r in results[mode])
        spooled = statistics.median(r["stats"].get("spooled", 0) for r in results[mode])
        print(f"  {mode:>15}: {requests:.0f} requests a run, {spooled:.0f} records spooled (medians)")
    summary = {}
    for mode in ("exporter", *shipping):
        summary[mode] = cpu[mode] * 1e6
        summary[f"{mode} slowdown"] = paired[mode]
        # the part of it measured directly, without a floor: every thread but the loop's, and finish()
        summary[f"{mode} direct"] = statistics.median(
            (sum(r["background"].values()) + r["finish"]) / calls for r in results[mode]) * 1e6
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-us", default="50,200", help="step lengths in us, comma-separated")
    parser.add_argument("--no-stub", action="store_true", help="leave out the stub API mode")
    parser.add_argument("--against", metavar="DIR", help="another version's `trainmon` package, in the same rounds")
    args = parser.parse_args()
    steps = [float(step) for step in str(args.step_us).split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-shipping-"))
    plan = {step: calibrate(step) for step in steps}
    modes = ("floor", "exporter", "shipping", *(() if args.no_stub else ("stub",)))
    if args.against:
        modes += tuple(f"{mode}@before" for mode in modes[1:])
    print(f"{os.cpu_count()} cores; 4 points a call; steps {', '.join(f'{s:.0f} us' for s in steps)}; "
          f"{args.calls} calls; modes {', '.join(modes)}; {args.rounds} rounds, fresh process each")
    started = time.monotonic()
    this_process = psutil.Process()
    with run_api(f"sqlite:///{workdir / 'bench.db'}", workdir) as url, stub_api() as stub:
        api_cpu = listener_cpu(url)
        urls = {"shipping": (url, api_cpu), "stub": (stub, lambda: sum(this_process.cpu_times()[:2]))}
        runs = {f"{step}/{mode}": (lambda _index, step=step, mode=mode:
                                   measure(mode, args.calls, plan[step], *urls.get(mode.partition("@")[0],
                                                                                  (url, api_cpu)), args.against))
                for step in steps for mode in modes}
        results = alternating_rounds(args.rounds, runs, rotate=True)
    summaries = {step: report(step, args.calls, {mode: results[f"{step}/{mode}"] for mode in modes})
                 for step in steps}
    print("\nsummary (medians): CPU per call over the floor [of which measured directly: the drain, shipper and "
          "other threads, finish()], loop slowdown (paired within each round):")
    for step, summary in summaries.items():
        for version in ("", "@before") if args.against else ("",):
            reference = f"exporter{version}"
            exporter, direct = summary[reference], summary[f"{reference} direct"]
            line = (f"  {step:4.0f} us step: {reference} {exporter:5.2f} us [{direct:4.2f}] "
                    f"({summary[f'{reference} slowdown'] * 100:4.1f} %)")
            for mode in (f"shipping{version}", *(() if args.no_stub else (f"stub{version}",))):
                line += (f", {mode} {summary[mode]:5.2f} us = {ratio(summary[mode], exporter)} "
                         f"[{summary[f'{mode} direct']:4.2f} = {ratio(summary[f'{mode} direct'], direct)}] "
                         f"({summary[f'{mode} slowdown'] * 100:4.1f} %)")
            print(line)
    print(f"goals: shipping <= 2x the exporter, <= 5 us a call, <= 3 % slowdown at 200 us; "
          f"{time.monotonic() - started:.0f} s")


def ratio(value: float, reference: float) -> str:
    """`value / reference` as `1.23x`; `n/a` when the reference measured nothing (a short run)."""
    return f"{value / reference:4.2f}x" if reference > 0 else " n/a"


if __name__ == "__main__":
    main()
