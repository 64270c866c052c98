"""Metric key normalisation shared by the exporter, the client and the metadata API (standard library only).

The mapping (documented in docs/metrics.md, "Metric names"):

1. surrounding whitespace is stripped;
2. every run of characters outside ``[A-Za-z0-9_]`` becomes one ``_`` (``val/loss`` -> ``val_loss``,
   ``train.acc`` -> ``train_acc``, ``lr (group 0)`` -> ``lr_group_0_``... then step 3);
3. leading and trailing ``_`` are stripped (``lr_group_0_`` -> ``lr_group_0``);
4. case is kept (``LR`` and ``lr`` stay two keys: lowercasing would merge keys silently);
5. a key that starts with a digit gets the prefix ``_`` (``1st_loss`` -> ``_1st_loss``);
6. a key that is not a string, is empty after these steps, or is longer than ``MAX_KEY_LENGTH`` characters is
   rejected (reason ``invalid_name``).
"""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 200
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_]+")


def normalize_key(name: object) -> str | None:
    """The Prometheus-safe form of a metric key, or None when the key is unusable (see module docstring)."""
    if not isinstance(name, str):
        return None
    key = _INVALID_RUN.sub("_", name.strip()).strip("_")
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    if key[0].isdigit():
        key = "_" + key
    return key


def is_valid_key(name: object) -> bool:
    """True when `name` maps to a usable key."""
    return normalize_key(name) is not None
