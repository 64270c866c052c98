"""Files of uploaded artifacts, under `<artifact_root>/experiments/<experiment_id>/artifacts/<run_id>/`.

A file is streamed to a temporary file in its final directory, fsynced, then renamed over its final name
(`trainmon.common.files.write_atomic`): a reader sees the old file or the new one, never a half-written one.
Names are single path components (`trainmon.common.files.check_name`, BadName otherwise); the final path is
checked to stay inside the artifact root.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trainmon.common.files import BadName, WrittenFile, check_name, write_atomic

CHUNK = 1024 * 1024


class TooLarge(ValueError):
    """An upload over the configured size."""


@dataclass(frozen=True)
class StoredFile:
    relative_path: str  # relative to the artifact root, '/'-separated
    size_bytes: int
    sha256: str


def artifact_relative_path(experiment_id: int, run_id: str, name: str, step: int | None) -> str:
    """Where an artifact lives under the root; artifacts logged at several steps keep one file per step."""
    check_name(run_id, "run_id")
    parts = ["experiments", str(int(experiment_id)), "artifacts", run_id]
    if step is not None:
        parts.append(f"step-{int(step)}")
    parts.append(check_name(name))
    return "/".join(parts)


def store(root: Path, relative_path: str, source: BinaryIO, max_bytes: int) -> StoredFile:
    """Copy `source` to `root/relative_path` atomically; its size and SHA-256. TooLarge past `max_bytes`."""
    root = root.resolve()
    target = (root / relative_path).resolve()
    if not target.is_relative_to(root):
        raise BadName(f"name: {relative_path!r} leaves the artifact root")

    def copy(out: BinaryIO) -> None:
        size = 0
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(f"file: larger than MAX_ARTIFACT_BYTES ({max_bytes} bytes)")
            out.write(chunk)

    written: WrittenFile = write_atomic(target, copy)
    return StoredFile(relative_path=relative_path, size_bytes=written.size_bytes, sha256=written.sha256)


def remove(root: Path, relative_path: str) -> None:
    """Delete a stored file (used when its database row could not be written)."""
    with contextlib.suppress(FileNotFoundError):
        (root / relative_path).unlink()
