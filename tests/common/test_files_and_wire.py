"""One name rule, atomic writes, and the NaN/±Inf wire encoding, as both sides use them."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from trainmon.common.files import MAX_NAME_BYTES, BadName, check_name, sha256_file, write_atomic
from trainmon.common.statuses import FINAL_STATUSES, final_status, log_level
from trainmon.common.wire import from_json_value, json_value, new_batch_id, points_rows, rows_points_json


@pytest.mark.parametrize("name", ["model.pt", "epoch=3-loss=0.1.ckpt", "weights (copy).bin", "é" * 100])
def test_plain_file_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", " a", "a ", "a/b", "a\\b", "..", "x..y", ".hidden", "a\x00b", "a\nb",
                                  "x" * (MAX_NAME_BYTES + 1), "é" * 101, 7, None])
def test_everything_else_is_a_bad_name_naming_the_field(name: object) -> None:
    with pytest.raises(BadName, match="^artifact name:"):
        check_name(name, "artifact name")


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"
    written = write_atomic(target, lambda file: file.write(b"one"))
    assert target.read_bytes() == b"one" and written.size_bytes == 3 and written.sha256 == sha256_file(target)

    def fail(file) -> None:
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail)
    assert target.read_bytes() == b"one" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_non_finite_values_round_trip_and_booleans_are_not_values() -> None:
    for value in (math.inf, -math.inf, 1.5, 0.0):
        assert from_json_value(json_value(value)) == value
    assert math.isnan(from_json_value(json_value(math.nan)))
    for bad in (True, "nan", None, [1]):
        with pytest.raises(ValueError):
            from_json_value(bad)


def test_statuses_and_levels() -> None:
    assert final_status("completed") == "COMPLETED" and "RUNNING" not in FINAL_STATUSES
    with pytest.raises(ValueError, match="COMPLETED, FAILED, CRASHED"):
        final_status("RUNNING")
    assert [log_level(n) for n in (10, 20, 30, 40, 50, 5)] == ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL",
                                                               "DEBUG"]
    assert log_level("warn") == "WARNING" and log_level("nonsense") == "INFO"


def test_points_as_rows_and_rows_as_point_objects() -> None:
    rows = points_rows([("loss", 1, 0.5, 10.0), ("loss", 2, math.nan, 11.0), ("acc", 2, 1, 11.0)])
    assert rows == [(1, 10.0, {"loss": 0.5}), (2, 11.0, {"loss": "NaN"}), (2, 11.0, {"acc": 1.0})]
    assert rows_points_json([(3, 12.0, {"a": 1.0, "b": "Infinity"}), *rows[:1]]) == [
        {"key": "a", "step": 3, "value": 1.0, "wall_time": 12.0},
        {"key": "b", "step": 3, "value": "Infinity", "wall_time": 12.0},
        {"key": "loss", "step": 1, "value": 0.5, "wall_time": 10.0}]


def test_batch_ids_are_unique_in_a_process_and_across_forks() -> None:
    ids = [new_batch_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a forked rank draws its own prefix
        os.write(write, new_batch_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert theirs[:16] != ids[0][:16] and theirs not in ids
