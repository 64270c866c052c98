"""The shipper without an API: offline spooling, a black-holed API, the size cap, and log_text batching."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import wait_until
from trainmon.client.api_client import ApiClient
from trainmon.client.records import RegisterRun, SetStatus
from trainmon.client.shipper import Shipper
from trainmon.client.spool import Spool


def _spooled(directory: Path) -> list[dict]:
    with Spool(directory) as spool:
        return [record for _position, record in spool.records()]


def _points(count: int, key: str = "loss", start: int = 0) -> list[tuple[str, int, float, float]]:
    return [(key, step, float(step), 1000.0 + step) for step in range(start, start + count)]


def test_offline_mode_writes_every_point_and_event_to_the_spool_in_order(tmp_path: Path) -> None:
    shipper = Shipper(None, Spool(tmp_path), "run-1", batch_points=100, queue_points=1000)
    shipper.offer(RegisterRun("run-1", {"experiment": "e", "run_id": "run-1"}))
    for start in range(0, 2500, 250):
        shipper.offer_points(_points(250, start=start))
    shipper.offer_points([("acc", 0, float("nan"), 1.0), ("acc", 1, float("inf"), 2.0)])
    shipper.offer(SetStatus("run-1", "COMPLETED"))
    assert shipper.close(timeout=10) is False  # offline: not delivered, but nothing lost
    records = _spooled(tmp_path)
    events = [record["op"] for record in records if record["op"] != "metrics"]
    assert events == ["run", "status"]  # events keep their order (a full queue spills metric batches ahead)
    assert records[-1] == {"op": "status", "run_id": "run-1", "status": "COMPLETED"}
    points = [(p["key"], p["step"], p["value"]) for r in records if r["op"] == "metrics" for p in r["points"]]
    assert points[:2500] == [("loss", step, float(step)) for step in range(2500)]
    assert points[2500:] == [("acc", 0, "NaN"), ("acc", 1, "Infinity")]
    batch_ids = [r["batch_id"] for r in records if r["op"] == "metrics"]
    assert len(batch_ids) == len(set(batch_ids)) and all(len(batch_id) == 32 for batch_id in batch_ids)


class BlackHole:
    """A TCP listener that accepts connections and never answers: the slowest possible API."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        """Stop listening and reset every connection (later connects are refused at once)."""
        self._stop.set()
        self._thread.join()
        self.server.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def test_a_hanging_api_never_blocks_the_trainer_side_and_the_queue_spills_to_disk(
        tmp_path: Path, black_hole: BlackHole) -> None:
    client = ApiClient(black_hole.url, timeout=(1.0, 30.0))
    shipper = Shipper(client, Spool(tmp_path), "run-1", batch_points=500, queue_points=2000)
    shipper.offer(RegisterRun("run-1", {"experiment": "e", "run_id": "run-1"}))
    wait_until(lambda: black_hole.accepted, timeout=10, what="the shipper to connect")
    # The shipper thread now waits up to 30 s for an answer; offers must still complete and stay bounded.
    for start in range(0, 20_000, 100):
        shipper.offer_points(_points(100, start=start))
        assert shipper.pending_points <= 2000
    assert shipper._busy  # noqa: SLF001 - still inside the hanging request
    spilled = [p["step"] for r in _spool_snapshot(shipper) if r["op"] == "metrics" for p in r["points"]]
    assert len(spilled) >= 18_000 and spilled == sorted(spilled)
    black_hole.close()  # the request fails, the API is now refused: close() returns promptly
    shipper.close(timeout=1)
    steps = [p["step"] for r in _spooled(tmp_path) if r["op"] == "metrics" for p in r["points"]]
    assert sorted(steps) == list(range(20_000))  # nothing lost: all spooled, each once


def _spool_snapshot(shipper: Shipper) -> list[dict]:
    return [record for _position, record in shipper.spool.records()]


def test_full_spool_drops_loudly_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    drops: list[tuple[str, int]] = []
    shipper = Shipper(None, Spool(tmp_path, max_bytes=20_000, segment_bytes=5_000), "run-1", batch_points=100,
                      queue_points=100, on_drop=lambda reason, count: drops.append((reason, count)))
    with caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
        for start in range(0, 5000, 100):
            shipper.offer_points(_points(100, start=start))
        shipper.close(timeout=5)
    assert shipper.dropped_points["spool_full"] > 0
    assert sum(count for reason, count in drops if reason == "spool_full") == shipper.dropped_points["spool_full"]
    assert "DROPPING data (spool_full)" in caplog.text
    kept = sum(len(r["points"]) for r in _spooled(tmp_path) if r["op"] == "metrics")
    assert kept + shipper.dropped_points["spool_full"] == 5000  # every point is either kept or counted


def test_log_lines_are_batched_with_a_batch_id(tmp_path: Path) -> None:
    shipper = Shipper(None, Spool(tmp_path), "run-1")
    for index in range(5):
        shipper.offer_log_line({"time": "2026-01-01T00:00:00+00:00", "level": "INFO", "message": f"line {index}"})
    shipper.close(timeout=5)
    (logs,) = [r for r in _spooled(tmp_path) if r["op"] == "logs"]
    assert [line["message"] for line in logs["lines"]] == [f"line {i}" for i in range(5)] and logs["batch_id"]


def test_bad_limits_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Shipper(None, Spool(tmp_path), "r", batch_points=10, queue_points=5)
