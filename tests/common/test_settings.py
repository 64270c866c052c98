"""The one TRAINMON_* resolver: an argument the caller passed wins, even when it equals the default."""

from __future__ import annotations

import pytest
from trainmon.client.config import ClientConfig
from trainmon.common.settings import NOT_GIVEN, SETTINGS, resolve
from trainmon.exporter import TrainingMonitor
from trainmon.exporter.config import resolve_config


def test_not_given_takes_the_environment_then_the_default() -> None:
    env = {"TRAINMON_HOST": "0.0.0.0", "TRAINMON_PUSH_INTERVAL": " 2.5 "}
    values = resolve(("host", "push_interval", "gpu"), {}, env)
    assert values == {"host": "0.0.0.0", "push_interval": 2.5, "gpu": True}
    assert resolve(("host",), {"host": NOT_GIVEN}, {"TRAINMON_HOST": "  "}) == {"host": "127.0.0.1"}


@pytest.mark.parametrize(("name", "explicit", "variable", "other"), [
    ("host", "127.0.0.1", "TRAINMON_HOST", "0.0.0.0"),
    ("mode", "online", "TRAINMON_MODE", "offline"),
    ("gpu", True, "TRAINMON_GPU", "0"),
    ("port", None, "TRAINMON_PORT", "9999"),
    ("api_url", None, "TRAINMON_API_URL", "http://elsewhere:5000"),
])
def test_an_explicit_argument_equal_to_the_default_still_wins(name: str, explicit: object, variable: str,
                                                                other: str) -> None:
    assert explicit == SETTINGS[name].default
    assert resolve((name,), {name: explicit}, {variable: other}) == {name: explicit}


def test_the_monitor_keeps_an_explicit_host_and_mode_over_the_environment(tmp_path) -> None:
    env = {"TRAINMON_HOST": "0.0.0.0", "TRAINMON_MODE": "offline", "TRAINMON_API_URL": "http://127.0.0.1:9"}
    assert resolve_config(env, host="127.0.0.1").host == "127.0.0.1"
    assert resolve_config(env).host == "0.0.0.0"
    assert ClientConfig.resolve(env, mode="online").mode == "online"
    assert ClientConfig.resolve(env).mode == "offline"
    with TrainingMonitor("explicit", port=0, host="127.0.0.1", mode="disabled", gpu=False, system=False,
                         handle_signals=False, env=env) as monitor:
        assert monitor.config.host == "127.0.0.1" and monitor.metrics_url.startswith("http://127.0.0.1:")
        assert monitor.recorder.config.mode == "disabled"


def test_a_bad_variable_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="TRAINMON_GPU"):
        resolve(("gpu",), {}, {"TRAINMON_GPU": "maybe"})
    with pytest.raises(ValueError, match="TRAINMON_SAMPLE_INTERVAL"):
        resolve(("sample_interval",), {}, {"TRAINMON_SAMPLE_INTERVAL": "fast"})


def test_every_variable_has_one_home() -> None:
    variables = [setting.variable for setting in SETTINGS.values()]
    assert len(variables) == len(set(variables)) and all(v.startswith("TRAINMON_") for v in variables)
    assert repr(NOT_GIVEN) == "NOT_GIVEN" and not NOT_GIVEN
