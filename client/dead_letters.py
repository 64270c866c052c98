"""A run's dead letters: records the API refused for good, kept beside the spool so nothing is silently lost.

``dead-letters.jsonl`` in the spool folder holds one JSON object per line: ``{time, status, message, record}``
(``record`` in the spool's JSON form). Appends are all-or-nothing. ``trainmon sync`` lists them and, with
``--retry-rejected`` (after the server was fixed), sends them again and keeps only those still refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from .spool import append_whole

FILE_NAME = "dead-letters.jsonl"


class DeadLetters:
    """The dead-letter file of one spool folder (thread-safe)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / FILE_NAME
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any], status: int | None, message: str) -> bool:
        """Append one refused record; False when it could not be written (nothing half-written is left)."""
        line = json.dumps({"time": time.time(), "status": status, "message": message[:2000], "record": record},
                          separators=(",", ":"), allow_nan=False).encode() + b"\n"
        with self._lock:
            return append_whole(self.path, line)

    def entries(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first (a line that does not parse is skipped)."""
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and isinstance(entry.get("record"), dict):
                    entries.append(entry)
        return entries

    def replace(self, entries: list[dict[str, Any]]) -> None:
        """Keep only ``entries`` (atomically); the file is removed when none are left."""
        with self._lock:
            if not entries:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                return
            data = b"".join(json.dumps(entry, separators=(",", ":")).encode() + b"\n" for entry in entries)
            temporary = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
            try:
                temporary.write_bytes(data)
                os.replace(temporary, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()

    def __len__(self) -> int:
        return len(self.entries())
