"""Monitor settings: constructor arguments, then TRAINMON_* environment variables, then defaults.

An environment variable applies when its argument is not given (left at its default), so a deployment can
override what a script leaves open without editing it; an explicit non-default argument always wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

DEFAULT_BASE_PORT = 9441
DISABLED_PORT_WORDS = ("off", "false", "no", "none", "disabled")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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


#: field -> environment variable
ENV_VARS = {
    "project_name": "TRAINMON_PROJECT",
    "port": "TRAINMON_PORT",
    "host": "TRAINMON_HOST",
    "pushgateway_url": "TRAINMON_PUSHGATEWAY_URL",
    "push_interval": "TRAINMON_PUSH_INTERVAL",
    "push_job": "TRAINMON_PUSH_JOB",
    "keep_push_group": "TRAINMON_KEEP_PUSH_GROUP",
    "gpu": "TRAINMON_GPU",
    "system": "TRAINMON_SYSTEM",
    "sample_interval": "TRAINMON_SAMPLE_INTERVAL",
    "strict": "TRAINMON_STRICT",
    "extrema_window": "TRAINMON_EXTREMA_WINDOW",
}


def resolve_config(env: Mapping[str, str] | None = None, **arguments: object) -> ExporterConfig:
    """Merge `arguments` (the monitor's keyword arguments) with the environment and validate."""
    env = os.environ if env is None else env
    defaults = ExporterConfig()
    values: dict[str, object] = {}
    for field in fields(ExporterConfig):
        default = getattr(defaults, field.name)
        given = arguments.pop(field.name, default)
        variable = ENV_VARS[field.name]
        raw = env.get(variable, "")
        if _is_default(given, default) and raw != "":
            given = _parse(field.name, variable, raw.strip(), default)
        values[field.name] = given
    if arguments:
        raise TypeError(f"unknown settings: {', '.join(sorted(arguments))}")
    config = ExporterConfig(**values)  # type: ignore[arg-type]
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


def _is_default(given: object, default: object) -> bool:
    return given is default or (type(given) is type(default) and given == default)


def _parse(name: str, variable: str, raw: str, default: object) -> object:
    if name == "port":
        if raw.lower() in DISABLED_PORT_WORDS:
            return False
        return _number(int, variable, raw)
    if isinstance(default, bool):
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(f"{variable}={raw!r}: expected one of {', '.join(_TRUE + _FALSE)}")
    if isinstance(default, float):
        return _number(float, variable, raw)
    return raw


def _number(kind: type, variable: str, raw: str) -> object:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a valid {kind.__name__}") from None


def _validate(config: ExporterConfig) -> None:
    port = config.port
    if port is True or (port not in (None, False) and (not isinstance(port, int) or not 0 <= port <= 65535)):
        raise ValueError(f"port must be None, False, 0 or 1-65535, got {port!r}")
    for name in ("push_interval", "sample_interval"):
        if not float(getattr(config, name)) > 0:  # type: ignore[arg-type]
            raise ValueError(f"{name} must be > 0 seconds, got {getattr(config, name)!r}")
    if not float(config.extrema_window) >= 1:
        raise ValueError(f"extrema_window must be >= 1 second, got {config.extrema_window!r}")
