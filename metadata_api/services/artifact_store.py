"""Files of uploaded artifacts, under `<artifact_root>/experiments/<experiment_id>/artifacts/<run_id>/`, and of
uploaded checkpoints, under `.../checkpoints/<run_id>/` (`IncomingFile`: received in pieces, checked against the
registered SHA-256 before it replaces anything).

A file is streamed to a temporary file in its final directory, fsynced, then renamed over its final name
(`trainmon.common.files.write_atomic`): a reader sees the old file or the new one, never a half-written one.
Names are single path components (`trainmon.common.files.check_name`, BadName otherwise); the final path is
checked to stay inside the artifact root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trainmon.common.files import BadName, WrittenFile, check_name, write_atomic

CHUNK = 1024 * 1024


class TooLarge(ValueError):
    """An upload over the configured size."""


class DigestMismatch(ValueError):
    """An upload whose SHA-256 differs from the one it must have."""


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


def checkpoint_relative_path(experiment_id: int, run_id: str, name: str) -> str:
    """Where an uploaded checkpoint file lives under the root: one directory a run (its id is unique in the
    experiment's project), the registered name in it."""
    check_name(run_id, "run_id")
    return "/".join(["experiments", str(int(experiment_id)), "checkpoints", run_id, check_name(name)])


def inside_root(root: Path, relative_path: str) -> Path:
    """`root/relative_path`, resolved; BadName when it leaves the root."""
    root = root.resolve()
    target = (root / relative_path).resolve()
    if not target.is_relative_to(root):
        raise BadName(f"name: {relative_path!r} leaves the artifact root")
    return target


def store(root: Path, relative_path: str, source: BinaryIO, max_bytes: int) -> StoredFile:
    """Copy `source` to `root/relative_path` atomically; its size and SHA-256. TooLarge past `max_bytes`."""
    target = inside_root(root, relative_path)

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


#: what a download may be served as, by the file's first bytes; anything else is application/octet-stream
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def served_type(path: Path) -> tuple[str, str]:
    """(media type, Content-Disposition type) to serve the file at `path` with: a PNG, JPEG, GIF or WebP (by its
    magic bytes, whatever the uploader declared) inline, anything else `application/octet-stream` as an
    attachment, so that an uploaded HTML or SVG file never runs as a page of the API's origin."""
    with path.open("rb") as file:
        head = file.read(16)
    for signature, media_type in IMAGE_SIGNATURES:
        if head.startswith(signature):
            return media_type, "inline"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "inline"
    return "application/octet-stream", "attachment"


class IncomingFile:
    """A file received in pieces (`write`) into a temporary file beside `target`, counted and hashed on the way;
    `check(sha256)` fsyncs it and compares the digest (DigestMismatch), `install()` renames it over `target`
    (atomic: a reader sees the old file or the new one), `discard()` removes it. TooLarge past `max_bytes`."""

    def __init__(self, target: Path, max_bytes: int, setting: str = "MAX_CHECKPOINT_BYTES"):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=target.parent)
        self.target, self.temporary = target, Path(name)
        self.file = os.fdopen(fd, "wb")
        self.max_bytes, self.setting = max_bytes, setting
        self.size_bytes = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.size_bytes += len(data)
        if self.size_bytes > self.max_bytes:
            raise TooLarge(f"file: larger than {self.setting} ({self.max_bytes} bytes)")
        self.digest.update(data)
        self.file.write(data)

    def check(self, sha256: str) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.digest.hexdigest() != sha256.lower():
            raise DigestMismatch(f"file: sha256 mismatch (registered {sha256.lower()}, uploaded "
                                 f"{self.digest.hexdigest()}, {self.size_bytes} bytes); nothing stored")

    def install(self) -> None:
        os.replace(self.temporary, self.target)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temporary.unlink()
