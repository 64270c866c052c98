"""Coercion of logged values to floats: ints, floats, bools, numpy and torch scalars (duck-typed, no imports)."""

from __future__ import annotations

import numbers


def coerce_value(value: object) -> float | None:
    """`value` as a float, or None when it is not a single real number.

    Accepted: int, float, bool (0/1), anything registered as `numbers.Real` (numpy floating/integer
    scalars, Fraction), and objects with `.item()` returning a real number (numpy 0-d arrays, torch 0-d or
    one-element tensors). Rejected: strings, bytes, None, complex, containers, multi-element arrays/tensors.
    """
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int or kind is bool:
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, (str, bytes, bytearray)):
        return None
    if isinstance(value, numbers.Real):
        return _to_float(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            inner = item()
        except Exception:  # noqa: BLE001 - e.g. a multi-element tensor: not a scalar
            return None
        if isinstance(inner, numbers.Real) and not isinstance(inner, (str, bytes)):
            return _to_float(inner)
    return None


def _to_float(value: numbers.Real) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None
