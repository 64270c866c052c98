"""Value coercion: ints, floats, bools, numpy scalars and 0-d arrays, torch-like `.item()` objects."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from trainmon.exporter.values import coerce_value


class ScalarTensor:
    """Duck-types a torch 0-d tensor: `.item()` returns a Python number (torch is never imported)."""

    def __init__(self, value: float):
        self.value = value

    def item(self) -> float:
        return self.value


class ManyElements:
    def item(self) -> float:
        raise ValueError("only one element tensors can be converted to Python scalars")


@pytest.mark.parametrize(("value", "expected"), [
    (1.5, 1.5), (3, 3.0), (-7, -7.0), (True, 1.0), (False, 0.0), (Fraction(1, 4), 0.25),
    (np.float32(0.5), 0.5), (np.float64(2.25), 2.25), (np.int64(9), 9.0), (np.bool_(True), 1.0),
    (np.array(4.5), 4.5), (np.array([6.0]), 6.0), (ScalarTensor(0.125), 0.125), (10**20, 1e20),
])
def test_numbers_become_floats(value: object, expected: float) -> None:
    result = coerce_value(value)
    assert type(result) is float
    assert result == expected


@pytest.mark.parametrize("value", ["1.0", b"1", None, 1j, [1.0], {"a": 1}, np.array([1.0, 2.0]), ManyElements(),
                                   ScalarTensor("text"), object()])  # type: ignore[arg-type]
def test_non_numbers_are_rejected(value: object) -> None:
    assert coerce_value(value) is None


def test_non_finite_values_are_kept_and_classified() -> None:
    assert math.isnan(coerce_value(float("nan")))  # type: ignore[arg-type]
    assert coerce_value(np.float32("inf")) == math.inf


def test_torch_is_never_imported() -> None:
    """An import hook records any attempt to import torch while the exporter starts, logs and scrapes."""
    code = """
import sys
attempts = []
class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            attempts.append(name)
        return None
sys.meta_path.insert(0, Recorder())
from trainmon.exporter import TrainingMonitor
monitor = TrainingMonitor("x", port=0, gpu=False, system=False, handle_signals=False)
monitor.log_metrics({"a": 1.0, "b": 2})
import urllib.request
urllib.request.urlopen(monitor.metrics_url).read()
monitor.finish()
print(attempts)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
