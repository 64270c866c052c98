"""Recorded readings the tests replay, in the repository under tests/fixtures/ (never outside the checkout)."""

from __future__ import annotations

from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"
#: NVML readings recorded on a real NVIDIA H200 (see its README.md); replayed by devtools.nvml_replay.ReplaySource.
H200_PROBE = FIXTURES_DIR / "nvml-h200" / "nvml_probe.json"
#: psutil readings for the system/process collector tests.
PSUTIL_READINGS = FIXTURES_DIR / "psutil_readings.json"
