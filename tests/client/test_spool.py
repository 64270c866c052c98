"""The on-disk spool: order, acknowledgement, torn records, the size cap, rotation, locking."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from support.procs import python_subprocess, wait_until
from trainmon.client.spool import Spool, SpoolLocked, find_spools


def _records(spool: Spool) -> list[dict]:
    return [record for _position, record in spool.records()]


def test_records_come_back_in_order_across_segments_and_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=200) as spool:
        for index in range(50):
            assert spool.append({"op": "note", "index": index})
        assert len(list(tmp_path.glob("*.seg"))) > 5  # rotation happened
    with Spool(tmp_path) as spool:
        spool.append({"op": "note", "index": 50})
        assert [record["index"] for record in _records(spool)] == list(range(51))


def test_ack_deletes_confirmed_segments_and_survives_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=200) as spool:
        for index in range(30):
            spool.append({"index": index})
        items = list(spool.records())
        spool.ack(items[19][0])
        assert [record["index"] for record in _records(spool)] == list(range(20, 30))
        remaining_segments = len(list(tmp_path.glob("*.seg")))
    with Spool(tmp_path) as spool:
        assert [record["index"] for record in _records(spool)] == list(range(20, 30))
        assert len(list(tmp_path.glob("*.seg"))) <= remaining_segments
        for position, _record in list(spool.records()):
            spool.ack(position)
        assert spool.is_empty()
    assert list(tmp_path.glob("*.seg")) == []  # everything confirmed: nothing left on disk


def test_torn_last_record_is_skipped_and_later_records_survive(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with Spool(tmp_path) as spool:
        for index in range(5):
            spool.append({"index": index, "pad": "x" * 100})
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    size = segment.stat().st_size
    os.truncate(segment, size - 40)  # a crash in the middle of writing the last record
    with Spool(tmp_path) as spool, caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
        spool.append({"index": 5})  # a new process appends after the crash
        assert [record["index"] for record in _records(spool)] == [0, 1, 2, 3, 5]
    assert "torn or corrupt" in caplog.text


def test_corrupt_payload_fails_its_checksum(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append({"index": 0})
        spool.append({"index": 1})
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last payload, length intact
    segment.write_bytes(bytes(data))
    with Spool(tmp_path) as spool:
        assert [record["index"] for record in _records(spool)] == [0]


def test_size_cap_refuses_appends_until_acknowledged(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1000, segment_bytes=300) as spool:
        written = sum(spool.append({"pad": "y" * 80}) for _ in range(40))
        assert 0 < written < 40
        assert spool.size_bytes <= 1000
        for position, _record in list(spool.records()):
            spool.ack(position)
        assert spool.append({"pad": "y" * 80})  # room again once confirmed segments are deleted


def test_nan_must_be_encoded_before_spooling(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool, pytest.raises(ValueError):
        spool.append({"value": float("nan")})


def test_one_process_at_a_time(tmp_path: Path) -> None:
    with Spool(tmp_path, meta={"run_id": "r1"}) as spool:
        with pytest.raises(SpoolLocked):
            Spool(tmp_path)
        assert spool.meta == {"run_id": "r1"}
    Spool(tmp_path).close()  # released on close


def test_find_spools(tmp_path: Path) -> None:
    Spool(tmp_path / "a", meta={"run_id": "a"}).close()
    Spool(tmp_path / "b", meta={"run_id": "b"}).close()
    (tmp_path / "unrelated").mkdir()
    assert find_spools(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert find_spools(tmp_path / "a") == [tmp_path / "a"]
    assert find_spools(tmp_path / "missing") == []


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        Spool(tmp_path, fsync="sometimes")


def test_a_writer_killed_9_mid_stream_leaves_an_ordered_readable_prefix(tmp_path: Path) -> None:
    code = (f"from trainmon.client.spool import Spool\n"
            f"spool = Spool({str(tmp_path)!r}, segment_bytes=64 * 1024)\n"
            "index = 0\n"
            "while True:\n"
            "    spool.append({'index': index, 'pad': 'z' * (index % 500)})\n"
            "    index += 1\n"
            "    if index == 2000:\n"
            "        print('WRITING', flush=True)\n")
    writer = python_subprocess(code, tmp_path / "writer.log")
    try:
        wait_until(lambda: "WRITING" in writer.log_tail(), timeout=30, what="the writer to write")
        writer.kill()  # SIGKILL in the middle of a stream of appends
    finally:
        writer.stop()
    with Spool(tmp_path) as spool:
        indices = [record["index"] for record in _records(spool)]
        assert len(indices) >= 2000 and indices == list(range(len(indices)))
        spool.append({"index": -1})  # and the spool keeps working after the crash
        assert [record["index"] for record in _records(spool)][-1] == -1
