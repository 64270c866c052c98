"""bench/_common.py: the CPU readings the request benches take of a server process."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_reading_counts_a_process_threads_to_the_microsecond() -> None:
    common = _common()
    spin = ("import sys, threading, time\n"
            "def spin():\n    end = time.thread_time() + 0.2\n    while time.thread_time() < end: pass\n"
            "    time.sleep(60)\n"
            "sys.stdin.readline(); threading.Thread(target=spin, daemon=True).start(); spin()\n")
    busy = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # started and waiting
        before = common.cpu_reading(busy.pid)
        busy.stdin.write("\n")
        busy.stdin.flush()
        time.sleep(1.0)  # both threads spun 0.2 s of CPU each, the second one started after `before`
        used = common.cpu_seconds_since(before, busy.pid)
        assert 0.39 <= used <= 0.6, used
        if sys.platform == "linux":  # run time in ns, not clock ticks (whole 10 ms)
            assert round(used * 1000, 6) != round(used * 100) * 10
    finally:
        busy.kill()
        busy.wait()


def test_print_medians_reads_a_floor_of_zero_as_no_ratio(capsys) -> None:  # noqa: ANN001 - pytest's fixture
    """A floor that measured nothing (a noisy run: CPU over a floor clamped at 0) prints n/a, not a crash."""
    medians = _common().print_medians({"exporter": [0.0, 0.0, 1e-6], "shipping": [2e-6, 3e-6, 4e-6]}, "exporter",
                                      "us", scale=1e6)
    assert medians == {"exporter": 0.0, "shipping": 3e-6}
    assert "ratio vs exporter n/a" in capsys.readouterr().out
