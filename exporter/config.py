"""Exporter settings: constructor arguments, then ``TRAINMON_*`` variables, then defaults
(`trainmon.common.settings.resolve`: an argument the caller passed always wins, even one equal to the default)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from trainmon.common.settings import resolve

DEFAULT_BASE_PORT = 9441


@dataclass(frozen=True)
class ExporterConfig:
    """Resolved settings; `port` None means the default base port, False disables the server."""

    project_name: str | None = None
    port: int | bool | None = None
    host: str = "127.0.0.1"
    pushgateway_url: str | None = None
    push_interval: float = 15.0
    push_job: str = "trainmon"
    keep_push_group: bool = False
    gpu: bool = True
    system: bool = True
    sample_interval: float = 5.0
    strict: bool = False
    extrema_window: float = 60.0


FIELDS = tuple(field.name for field in fields(ExporterConfig))


def resolve_config(env: Mapping[str, str] | None = None, **arguments: object) -> ExporterConfig:
    """Merge `arguments` (the monitor's keyword arguments, `NOT_GIVEN` when left out) with the environment."""
    unknown = set(arguments) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    config = ExporterConfig(**resolve(FIELDS, arguments, os.environ if env is None else env))
    _validate(config)
    return config


def resolve_port(port: int | bool | None, local_rank: int) -> int | None:
    """The port to bind: None -> default base + local rank, 0 -> free port, N -> N + local rank, False -> None."""
    if port is False:
        return None
    if port is None:
        return DEFAULT_BASE_PORT + local_rank
    if port == 0:
        return 0
    return int(port) + local_rank


def _validate(config: ExporterConfig) -> None:
    port = config.port
    if port is True or (port not in (None, False) and (not isinstance(port, int) or not 0 <= port <= 65535)):
        raise ValueError(f"port must be None, False, 0 or 1-65535, got {port!r}")
    for name in ("push_interval", "sample_interval"):
        if not float(getattr(config, name)) > 0:  # type: ignore[arg-type]
            raise ValueError(f"{name} must be > 0 seconds, got {getattr(config, name)!r}")
    if not float(config.extrema_window) >= 1:
        raise ValueError(f"extrema_window must be >= 1 second, got {config.extrema_window!r}")
