"""Client settings: constructor arguments, then ``TRAINMON_*`` variables, then defaults
(`trainmon.common.settings.resolve`: an argument the caller passed always wins, even one equal to the default).

Modes: ``online`` (default; needs an API URL, otherwise the monitor is Prometheus-only and says so once),
``offline`` (everything goes to the spool only; upload later with ``trainmon sync``), ``disabled`` (no thread,
no spool, no network: the SDK methods are no-ops, except ``save_checkpoint`` which still writes your file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainmon.common.settings import NOT_GIVEN, SETTINGS, resolve

from .spool import DEFAULT_MAX_BYTES

MODES = ("online", "offline", "disabled")
#: settings resolved from arguments and TRAINMON_* variables (trainmon.common.settings.SETTINGS)
RESOLVED = ("api_url", "api_token", "mode", "spool_dir", "checkpoint_root", "upload_checkpoints", "grafana_url",
            "flush_timeout", "heartbeat_interval", "capture_context")


def default_spool_dir() -> Path:
    """``$XDG_CACHE_HOME/trainmon/spool`` (``~/.cache/trainmon/spool``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "trainmon" / "spool"


@dataclass
class ClientConfig:
    """Settings of the metadata side of a monitor."""

    api_url: str | None = None
    api_token: str | None = None
    mode: str = "online"
    spool_dir: str | Path | None = None
    params: Mapping[str, Any] | None = None
    tags: Mapping[str, Any] | None = None
    resume: str | bool | None = None
    checkpoint_root: str | Path = "experiments"
    upload_checkpoints: bool = True
    grafana_url: str = "http://127.0.0.1:3000"
    flush_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    capture_context: bool = True
    batch_points: int = 5000
    batch_interval: float = 1.0
    queue_points: int = 100_000
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    #: no API URL was given at all (argument or TRAINMON_API_URL): look for a local API, else record locally
    discover: bool = False

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None, **given: Any) -> ClientConfig:
        """Arguments (`NOT_GIVEN` when left out) over the environment over defaults; then validate."""
        env = os.environ if env is None else env
        values = {name: value for name, value in given.items() if value is not NOT_GIVEN and name not in RESOLVED}
        values.update(resolve(RESOLVED, given, env))
        values["discover"] = (given.get("api_url", NOT_GIVEN) is NOT_GIVEN
                              and not env.get(SETTINGS["api_url"].variable, "").strip())
        config = cls(**values)
        config.mode = str(config.mode).lower()
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {config.mode!r} (TRAINMON_MODE)")
        if config.api_url and not str(config.api_url).startswith(("http://", "https://")):
            raise ValueError(f"api_url must be an http(s) URL, got {config.api_url!r} (TRAINMON_API_URL)")
        if float(config.flush_timeout) < 0:
            raise ValueError("flush_timeout must be >= 0 seconds")
        return config
