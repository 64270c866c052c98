"""Repository tooling, not shipped: the `make demo` script, stack config rendering, the NVML replay source and the
child-process helpers shared by the demo, the bench scripts and the tests.

This folder sits at the repository root and is imported as `devtools` from there (pytest's `pythonpath`, `python -m
devtools.demo`, bench/_common.py); it is not part of the `trainmon` wheel.
"""

from pathlib import Path

#: The repository root (the folder holding devtools/, tests/, prometheus/ ...).
REPO = Path(__file__).resolve().parents[1]
