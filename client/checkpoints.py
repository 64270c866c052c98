"""Finding a run's checkpoint in the metadata API and loading it back, hash verified.

``load_checkpoint(api, run_id, which)``: ``which`` is ``"latest"`` (highest step, else newest), a step (int) or
a checkpoint name (str). The file is read from its registered ``file://`` URI when that file is here and has the
registered SHA-256; otherwise it is downloaded from the API (``GET .../checkpoints/{id}/file``) into a cache
folder and checked against the same hash. ``.pt`` files are read with ``torch.load``, the others with ``pickle``:
load only checkpoints you trust (both formats can run code when loaded).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from trainmon.common.files import sha256_file

from .api_client import ApiClient, quote_segment

PAGE = 1000


class CheckpointError(RuntimeError):
    """No such checkpoint, or its bytes do not match the registered SHA-256."""


def find_checkpoint(api: ApiClient, run_id: str, which: str | int = "latest") -> dict[str, Any]:
    """The registration of one checkpoint of ``run_id`` (see the module docstring for ``which``)."""
    items = _checkpoints(api, run_id)
    if not items:
        raise CheckpointError(f"run {run_id!r} has no registered checkpoint")
    if which == "latest":
        return max(items, key=lambda item: (item.get("step") is not None, item.get("step") or 0,
                                            item.get("created_at") or "", item.get("id") or 0))
    if isinstance(which, int) and not isinstance(which, bool):
        matches = [item for item in items if item.get("step") == which]
    elif isinstance(which, str):
        matches = [item for item in items if item.get("name") == which]
    else:
        raise TypeError(f'which must be "latest", a step (int) or a name (str), got {which!r}')
    if not matches:
        raise CheckpointError(f"run {run_id!r} has no checkpoint {which!r}")
    return max(matches, key=lambda item: (item.get("created_at") or "", item.get("id") or 0))


def checkpoint_file(api: ApiClient, run_id: str, checkpoint: dict[str, Any], cache_dir: Path) -> Path:
    """A local file with the checkpoint's bytes, verified against its SHA-256."""
    expected = checkpoint["sha256"]
    local = _local_path(checkpoint.get("uri"))
    if local is not None and local.is_file() and sha256_file(local) == expected:
        return local
    target = cache_dir / f"{expected}-{checkpoint['name']}"
    if target.is_file() and sha256_file(target) == expected:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = f"/api/runs/{quote_segment(run_id)}/checkpoints/{int(checkpoint['id'])}/file"
    fd, temporary = tempfile.mkstemp(prefix=".download-", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            api.download(path, out)
        if sha256_file(Path(temporary)) != expected:
            raise CheckpointError(f"checkpoint {checkpoint['name']!r} of run {run_id!r}: the downloaded bytes do "
                                  f"not match the registered sha256 {expected}")
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target


def load_file(path: Path, map_location: Any = "cpu") -> Any:
    """The object stored in a checkpoint file (``torch.load`` for ``.pt``, ``pickle`` otherwise)."""
    if path.suffix == ".pt":
        import torch  # noqa: PLC0415 - only when a torch checkpoint is loaded

        return torch.load(path, map_location=map_location, weights_only=False)
    with open(path, "rb") as file:
        return pickle.load(file)  # noqa: S301 - documented: load only checkpoints you trust


def _checkpoints(api: ApiClient, run_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = api.request("GET", f"/api/runs/{quote_segment(run_id)}/checkpoints",
                           params={"limit": PAGE, "offset": offset})
        items.extend(page.get("items", []))
        offset += PAGE
        if offset >= int(page.get("total", 0)):
            return items


def _local_path(uri: Any) -> Path | None:
    if not isinstance(uri, str) or not uri.startswith("file://"):
        return None
    return Path(unquote(urlparse(uri).path))
