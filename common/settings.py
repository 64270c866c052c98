"""The one resolver of trainer-side settings: an explicit argument, else ``TRAINMON_*``, else the default.

Every ``TRAINMON_*`` variable a trainer reads is declared once, in `SETTINGS`. An argument counts as given
whenever the caller passed it, even when it equals the default (``host="127.0.0.1"`` beats ``TRAINMON_HOST``):
"not given" is the `NOT_GIVEN` sentinel, never a value a user could mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
DISABLED_PORT_WORDS = ("off", "false", "no", "none", "disabled")


class NotGiven:
    """The type of `NOT_GIVEN`: an argument the caller left out."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Final = NotGiven()


def parse_str(variable: str, raw: str) -> str:
    return raw


def parse_bool(variable: str, raw: str) -> bool:
    word = raw.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{variable}={raw!r}: expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def parse_float(variable: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a valid number") from None


def parse_port(variable: str, raw: str) -> int | bool:
    """A port number, or False for one of `DISABLED_PORT_WORDS`."""
    if raw.lower() in DISABLED_PORT_WORDS:
        return False
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a valid int") from None


@dataclass(frozen=True)
class Setting:
    """One setting: its argument name, its environment variable, its default and how the variable is parsed."""

    name: str
    variable: str
    default: Any
    parse: Callable[[str, str], Any]
    doc: str


def _s(name: str, default: Any, parse: Callable[[str, str], Any], doc: str) -> Setting:
    return Setting(name, f"TRAINMON_{name.upper()}", default, parse, doc)


#: every TRAINMON_* setting of a trainer, by argument name (docs/sdk.md's table is checked against it)
SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("project_name", "TRAINMON_PROJECT", None, parse_str, "project the run belongs to"),
    _s("port", None, parse_port, "metrics port: unset = 9441 + local rank, 0 = a free port, off = no server"),
    _s("host", "127.0.0.1", parse_str, "address the metrics server binds (0.0.0.0 to be scraped from elsewhere)"),
    _s("pushgateway_url", None, parse_str, "push to this Pushgateway as well"),
    _s("push_interval", 15.0, parse_float, "seconds between pushes"),
    _s("push_job", "trainmon", parse_str, "Pushgateway job name"),
    _s("keep_push_group", False, parse_bool, "keep the push group after a COMPLETED run"),
    _s("gpu", True, parse_bool, "collect GPU metrics through NVML"),
    _s("system", True, parse_bool, "collect host and process metrics through psutil"),
    _s("sample_interval", 5.0, parse_float, "seconds between GPU/system samples"),
    _s("strict", False, parse_bool, "raise ValueError for an invalid name or value instead of counting it"),
    _s("extrema_window", 60.0, parse_float, "seconds over which window max/min are kept"),
    _s("api_url", None, parse_str, "metadata API URL"),
    _s("api_token", None, parse_str, "API token (write scope)"),
    _s("mode", "online", parse_str, "online, offline (spool only, upload with `trainmon sync`) or disabled"),
    _s("spool_dir", None, parse_str, "spool folder (default ~/.cache/trainmon/spool)"),
    _s("checkpoint_root", "experiments", parse_str, "folder checkpoints and artifacts are written under"),
    _s("upload_checkpoints", True, parse_bool, "upload checkpoint files to the API's store (off: register by URI)"),
    _s("grafana_url", "http://127.0.0.1:3000", parse_str, "Grafana base URL used in compare links"),
    _s("flush_timeout", 30.0, parse_float, "seconds finish() waits for delivery"),
    _s("heartbeat_interval", 5.0, parse_float, "seconds between heartbeats to the API"),
    _s("capture_context", True, parse_bool, "record the run context at start (git, command, versions, GPUs)"),
)}

#: variables read outside `resolve` (run identity), listed here so that every TRAINMON_* name has one home
RUN_ID_VARIABLE = "TRAINMON_RUN_ID"


def resolve(names: Iterable[str], given: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The value of each named setting: the argument unless it is `NOT_GIVEN`, else its environment variable
    (when set and not blank), else the default. Raises ValueError naming a variable that does not parse."""
    values: dict[str, Any] = {}
    for name in names:
        setting = SETTINGS[name]
        value = given.get(name, NOT_GIVEN)
        if value is NOT_GIVEN:
            raw = env.get(setting.variable, "").strip()
            value = setting.parse(setting.variable, raw) if raw else setting.default
        values[name] = value
    return values
