"""Metric key normalisation (the mapping documented in docs/metrics.md, "Metric names")."""

from __future__ import annotations

import pytest
from trainmon.common.naming import MAX_KEY_LENGTH, is_valid_key, normalize_key


@pytest.mark.parametrize(("raw", "key"), [
    ("loss", "loss"),
    ("val/loss", "val_loss"),
    ("train.acc", "train_acc"),
    ("train/loss.step", "train_loss_step"),
    ("lr (group 0)", "lr_group_0"),
    ("a//b", "a_b"),
    ("  loss  ", "loss"),
    ("LR", "LR"),
    ("1st_loss", "_1st_loss"),
    ("2", "_2"),
    ("_private", "private"),
    ("grad-norm", "grad_norm"),
    ("perplexity@k=5", "perplexity_k_5"),
])
def test_documented_mapping(raw: str, key: str) -> None:
    assert normalize_key(raw) == key


@pytest.mark.parametrize("raw", ["", "   ", "///", "损失", "...", None, 3, b"loss", "x" * (MAX_KEY_LENGTH + 1)])
def test_unusable_names_are_rejected(raw: object) -> None:
    assert normalize_key(raw) is None
    assert not is_valid_key(raw)


def test_case_is_kept_so_keys_never_merge_silently() -> None:
    assert normalize_key("LR") != normalize_key("lr")


def test_longest_allowed_key() -> None:
    assert normalize_key("k" * MAX_KEY_LENGTH) == "k" * MAX_KEY_LENGTH
