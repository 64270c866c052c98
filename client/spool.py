"""Append-only, crash-safe on-disk spool for what the metadata API has not confirmed yet.

Layout of one spool (one directory per trainer process, e.g. ``<spool_dir>/<run_id>-rank0``)::

    meta.json              api_url, run_id, experiment, rank (never the token); written once
    lock                   flock-ed by the process that owns the spool (a trainer or `trainmon sync`)
    cursor.json            {"segment": N, "offset": K}: everything before it was acknowledged
    00000000000000000001.seg, ...   segments, replayed in file-name order

Record framing: ``<u32 length><u32 crc32(payload)>`` (little endian) followed by ``payload``, the JSON of one
record (UTF-8, NaN/Inf already encoded as strings). A reader stops at the first short or mismatching record of a
segment (a write torn by a crash), warns once, and goes on with the next segment; each process that opens a
spool starts a new segment, so a torn tail is never appended to and never corrupts what follows.

fsync policy (``fsync=``): ``"rotate"`` (default) writes every record straight to the OS with ``os.write``
(it survives the trainer being killed, even with -9) and fsyncs a segment when it is closed or rotated and
every ``fsync_interval`` seconds (survives power loss up to that point); ``"always"`` fsyncs every record;
``"never"`` leaves it to the OS.

Size cap: the segments on disk never exceed ``max_bytes`` (default 2 GiB). An append beyond it is refused and
counted: the caller drops the points loudly (warning + ``trainmon_exporter_dropped_points_total{reason=
"spool_full"}``). Acknowledged segments are deleted, which frees room again.

Appends are all-or-nothing: a write that fails part-way (a full disk, an I/O error) is truncated back to the last
whole record and reported as not spooled, so the records after it stay readable. An acknowledgement that cannot
be written (the cursor file) is kept in memory and written with the next one; at worst a record is sent twice,
which the API stores once.

`MemorySpool` has the same interface in memory (bounded): the shipper uses it when no spool folder can be
written, so the run is still recorded while the API is reachable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib still works without it
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("trainmon.exporter")

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_SEGMENT_BYTES = 32 * 1024**2
FSYNC_POLICIES = ("rotate", "always", "never")
_HEADER = struct.Struct("<II")
_SEGMENT_SUFFIX = ".seg"
MAX_RECORD_BYTES = 256 * 1024**2


class SpoolLocked(RuntimeError):
    """Another process (a live trainer or a running `trainmon sync`) owns this spool."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a record starts (segment number, byte offset) and where the next one starts."""

    segment: int
    offset: int
    next_offset: int = 0


def encode_record(record: dict[str, Any]) -> bytes:
    """One framed record; raises ValueError for NaN/Inf floats (encode them as strings first)."""
    payload = _dumps(record)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _dumps(record: dict[str, Any]) -> bytes:
    """Compact JSON: orjson (metric batches: ~10x faster) unless the record holds a null, which may be a NaN or
    Inf that orjson writes as null; then (and for what orjson cannot write) the stdlib, which refuses them."""
    if orjson is not None:
        try:
            payload = orjson.dumps(record)
        except TypeError:  # a type orjson does not take (int keys, huge ints): the stdlib decides
            pass
        else:
            if b"null" not in payload:
                return payload
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def _loads(payload: bytes) -> Any:
    if orjson is not None:
        with contextlib.suppress(ValueError):  # e.g. an escaped lone surrogate: the stdlib reads it
            return orjson.loads(payload)
    return json.loads(payload)


def read_record(file: BinaryIO, offset: int) -> tuple[int, dict[str, Any]] | None:
    """The record at ``offset`` as ``(next_offset, record)``; None at the end or at a torn/corrupt record."""
    file.seek(offset)
    header = file.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    length, crc = _HEADER.unpack(header)
    if length > MAX_RECORD_BYTES:
        return None
    payload = file.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    try:
        return offset + _HEADER.size + length, _loads(payload)
    except ValueError:
        return None


class Spool:
    """One spool directory: append records, read them back in order, acknowledge, delete what was confirmed.

    Thread-safe. Only one process at a time may open a spool (``SpoolLocked`` otherwise).
    """

    def __init__(self, directory: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, fsync: str = "rotate", fsync_interval: float = 1.0,
                 meta: dict[str, Any] | None = None):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self._lock = threading.RLock()
        self._lock_file = open(self.directory / "lock", "a+")  # noqa: SIM115 - closed in close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLocked(f"spool {self.directory} is in use by another process") from None
        if meta is not None:
            self.write_meta(meta)
        self._cursor = self._load_cursor()
        self._sizes = {self._segment_number(path): path.stat().st_size for path in self._segment_paths()}
        self._fd: int | None = None
        self._active = 0
        self._active_size = 0
        self._last_fsync = time.monotonic()
        self._warned: set[int] = set()
        self._cursor_unsaved = False
        self._delete_acknowledged()

    # --- metadata ---

    @property
    def meta(self) -> dict[str, Any]:
        """What the owner wrote in ``meta.json`` (empty when none)."""
        try:
            return json.loads((self.directory / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        _atomic_write(self.directory / "meta.json", json.dumps(meta, sort_keys=True).encode())

    # --- writing ---

    def append(self, record: dict[str, Any]) -> bool:
        """Append one record; False (nothing written) when it would exceed ``max_bytes``."""
        data = encode_record(record)
        with self._lock:
            if self.size_bytes + len(data) > self.max_bytes:
                return False
            if self._fd is None or self._active_size + len(data) > self.segment_bytes and self._active_size:
                self._rotate()
            assert self._fd is not None
            if not write_whole(self._fd, data):
                return False
            self._active_size += len(data)
            self._sizes[self._active] = self._active_size
            now = time.monotonic()
            if self.fsync == "always" or (self.fsync == "rotate" and now - self._last_fsync >= self.fsync_interval):
                with contextlib.suppress(OSError):  # written to the OS already: it survives the process
                    os.fsync(self._fd)
                self._last_fsync = now
            return True

    def _rotate(self) -> None:
        self._close_active()
        self._active = max([*self._sizes, self._cursor[0]], default=0) + 1
        path = self._segment_path(self._active)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._active_size = 0
        self._sizes[self._active] = 0
        if self.fsync != "never":
            _fsync_directory(self.directory)

    def _close_active(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                if self.fsync != "never":
                    os.fsync(self._fd)
                os.close(self._fd)
            self._fd = None

    # --- reading and acknowledging ---

    def records(self) -> Iterator[tuple[Position, dict[str, Any]]]:
        """Every unacknowledged record, oldest first; a torn or corrupt tail of a segment is skipped (warned once)."""
        with self._lock:
            segments = sorted(number for number in self._sizes if number >= self._cursor[0])
            cursor = self._cursor
        for number in segments:
            offset = cursor[1] if number == cursor[0] else 0
            try:
                file = open(self._segment_path(number), "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue
            with file:
                while True:
                    with self._lock:
                        found = read_record(file, offset)
                        size = self._sizes.get(number, 0)
                    if found is None:
                        break
                    next_offset, record = found
                    yield Position(number, offset, next_offset), record
                    offset = next_offset
            if offset < size and number != self._active and number not in self._warned:
                self._warned.add(number)
                log.warning("trainmon: spool segment %s has a torn or corrupt record at byte %d; "
                            "skipping its last %d bytes", self._segment_path(number), offset, size - offset)

    def peek(self) -> tuple[Position, dict[str, Any]] | None:
        """The oldest unacknowledged record, or None when everything was acknowledged."""
        for item in self.records():
            return item
        return None

    def ack(self, position: Position) -> None:
        """Mark everything up to and including the record at ``position`` as confirmed by the server."""
        with self._lock:
            self._cursor = (position.segment, position.next_offset)
            try:
                _atomic_write(self.directory / "cursor.json",
                              json.dumps({"segment": position.segment, "offset": position.next_offset}).encode())
            except OSError as error:  # kept in memory; written with the next ack (a resend is stored once)
                if not self._cursor_unsaved:
                    log.warning("trainmon: cannot write the spool cursor in %s: %s", self.directory, error)
                self._cursor_unsaved = True
                return
            self._cursor_unsaved = False
            self._delete_acknowledged()

    def is_empty(self) -> bool:
        return self.peek() is None

    @property
    def size_bytes(self) -> int:
        """Bytes of segments on disk (acknowledged segments are deleted, so this is what awaits replay)."""
        with self._lock:
            return sum(self._sizes.values())

    def _delete_acknowledged(self) -> None:
        """Delete segments entirely before the cursor, and the cursor's segment once fully read and closed."""
        segment, offset = self._cursor
        for number in sorted(self._sizes):
            done = number < segment or (number == segment and offset >= self._sizes[number])
            if done and number != self._active:
                with contextlib.suppress(FileNotFoundError):
                    self._segment_path(number).unlink()
                del self._sizes[number]

    def _load_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads((self.directory / "cursor.json").read_text())
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0

    # --- files ---

    def _segment_paths(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SEGMENT_SUFFIX}"))

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{_SEGMENT_SUFFIX}"

    @staticmethod
    def _segment_number(path: Path) -> int:
        return int(path.name[: -len(_SEGMENT_SUFFIX)])

    def close(self) -> None:
        """Fsync and close the active segment, delete what was acknowledged, release the lock."""
        with self._lock:
            self._close_active()
            self._active = 0
            self._delete_acknowledged()
            if not self._lock_file.closed:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def find_spools(root: str | Path) -> list[Path]:
    """Spool directories under ``root`` (``root`` itself when it is one), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    if (root / "meta.json").exists() or any(root.glob(f"*{_SEGMENT_SUFFIX}")):
        return [root]
    return sorted(path for path in root.iterdir() if path.is_dir() and (path / "meta.json").exists())


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def append_whole(path: Path, data: bytes) -> bool:
    """Append ``data`` to ``path`` entirely or not at all: on a short or failed write (ENOSPC, EIO) the file is
    truncated back to its previous size. False when nothing was appended."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return False
    try:
        return write_whole(fd, data)
    finally:
        os.close(fd)


def write_whole(fd: int, data: bytes) -> bool:
    """Write all of ``data`` at the end of the file open as ``fd``, or truncate back and return False."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError("short write")
            view = view[written:]
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        return False


class MemorySpool:
    """A bounded in-memory stand-in for `Spool` (same methods), for when no spool folder can be written."""

    def __init__(self, directory: str | Path, *, max_bytes: int = 64 * 1024**2, meta: dict[str, Any] | None = None):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.meta = dict(meta or {})
        self._lock = threading.Lock()
        self._records: list[tuple[int, dict[str, Any], int]] = []  # (number, record, size)
        self._next = 1

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta = dict(meta)

    def append(self, record: dict[str, Any]) -> bool:
        size = len(encode_record(record))
        with self._lock:
            if self.size_bytes + size > self.max_bytes:
                return False
            self._records.append((self._next, record, size))
            self._next += 1
            return True

    def records(self) -> Iterator[tuple[Position, dict[str, Any]]]:
        with self._lock:
            snapshot = list(self._records)
        for number, record, _size in snapshot:
            yield Position(number, 0, 0), record

    def peek(self) -> tuple[Position, dict[str, Any]] | None:
        return next(iter(self.records()), None)

    def ack(self, position: Position) -> None:
        with self._lock:
            self._records = [item for item in self._records if item[0] > position.segment]

    def is_empty(self) -> bool:
        return not self._records

    @property
    def size_bytes(self) -> int:
        return sum(size for _number, _record, size in self._records)

    @property
    def count(self) -> int:
        return len(self._records)

    def close(self) -> None:
        """Nothing to release; what is left is lost with the process (the caller counts it)."""


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
