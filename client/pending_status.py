"""A run's final status when the API could not take it at finish: ``final-status.json`` beside the spool.

The recorder sends the final status straight to the API at finish (not behind a spooled backlog); when that
fails, this small file keeps it and ``trainmon sync`` delivers it after the spool's records. Its room is reserved
when the spool is opened (`reserve`), and the status is later written over it in place, so a full disk cannot
lose it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

FILE_NAME = "final-status.json"
RESERVED_BYTES = 512


def reserve(directory: str | Path, run_id: str) -> bool:
    """Write a placeholder (no status yet) of `RESERVED_BYTES`; False when it cannot be written."""
    return _write(Path(directory) / FILE_NAME, run_id, None)


def save(directory: str | Path, run_id: str, status: str) -> bool:
    """Keep ``status`` for ``trainmon sync``; False when it could not be written."""
    return _write(Path(directory) / FILE_NAME, run_id, status)


def load(directory: str | Path) -> tuple[str, str] | None:
    """``(run_id, status)`` waiting in ``directory``, or None (no file, or only the placeholder)."""
    try:
        data = json.loads((Path(directory) / FILE_NAME).read_text())
        return (str(data["run_id"]), str(data["status"])) if data.get("status") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove(directory: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (Path(directory) / FILE_NAME).unlink()


def _write(path: Path, run_id: str, status: str | None) -> bool:
    data = json.dumps({"run_id": run_id, "status": status}).encode()
    data = data.ljust(max(RESERVED_BYTES, len(data)))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:  # in place over the reserved bytes: no new block is needed on a full disk
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        with contextlib.suppress(OSError):
            os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
