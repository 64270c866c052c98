"""File names and atomic file writes, one rule for the client and the metadata API."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

#: longest file name in UTF-8 bytes (leaves room for the temporary file's prefix and suffix under 255)
MAX_NAME_BYTES = 200
NAME_RULE = (f"1 to {MAX_NAME_BYTES} bytes, not starting with '.', no leading or trailing spaces, no '/', '\\', "
             "'..' or control characters")


class BadName(ValueError):
    """A file, checkpoint or artifact name that is not one plain path component."""


def check_name(name: object, field: str = "name") -> str:
    """`name` when it is usable as one plain file name (see `NAME_RULE`); BadName naming `field` otherwise."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise BadName(f"{field}: {name!r} must be a non-empty string without leading or trailing spaces")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise BadName(f"{field}: longer than {MAX_NAME_BYTES} bytes")
    if name.startswith("."):
        raise BadName(f"{field}: {name!r} must not start with '.' (hidden and temporary files do)")
    if "/" in name or "\\" in name or ".." in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadName(f"{field}: {name!r} must be a plain file name (no path separators, '..' or control "
                      "characters)")
    return name


@dataclass(frozen=True)
class WrittenFile:
    """A file written atomically: where, how large, its SHA-256."""

    path: Path
    size_bytes: int
    sha256: str

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> WrittenFile:
    """Write `path` through ``write(file)`` into a temporary file beside it, fsync, rename over it.

    A reader sees the old file or the new one, never a half-written one; on any error nothing is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return WrittenFile(path, path.stat().st_size, sha256_file(path))


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
