"""docs/sdk.md's settings table is `trainmon.common.settings.SETTINGS`: the same variables, arguments and defaults.

A default is written as the environment would spell it (`15`, `false`, `127.0.0.1`) and read back with the
setting's own parser; a setting without a default says "unset" (what applies then follows in the cell).
"""

from __future__ import annotations

import inspect

from support.docs import code_spans, docs_page, section, table
from trainmon.common.settings import NOT_GIVEN, RUN_ID_VARIABLE, SETTINGS, resolve


def settings_rows() -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for row in table(section(docs_page("sdk"), "Settings")):
        (variable,) = code_spans(row["environment"])
        assert variable not in rows, f"{variable} documented twice"
        rows[variable] = row
    return rows


def test_the_settings_table_lists_every_trainmon_variable_with_its_argument_and_default() -> None:
    rows = settings_rows()
    expected = {setting.variable: setting for setting in SETTINGS.values()}
    assert set(rows) == set(expected) | {RUN_ID_VARIABLE}
    assert code_spans(rows.pop(RUN_ID_VARIABLE)["argument"]) == ["run_id"]
    for variable, row in rows.items():
        setting = expected[variable]
        assert code_spans(row["argument"]) in ([], [setting.name]), f"{variable}: argument {row['argument']!r}"
        default = row["default"]
        if setting.default is None:
            assert default.startswith("unset"), f"{variable}: no default, but the table says {default!r}"
        else:
            spans = code_spans(default)
            assert spans and not default.startswith("unset"), f"{variable}: default {setting.default!r} missing"
            documented = setting.parse(variable, spans[0])
            assert documented == setting.default, f"{variable}: table {spans[0]!r}, code {setting.default!r}"


def test_an_explicit_argument_wins_even_when_it_equals_the_default() -> None:
    env = {"TRAINMON_HOST": "0.0.0.0", "TRAINMON_PUSH_INTERVAL": "30"}
    host = SETTINGS["host"].default
    assert resolve(["host"], {"host": host}, env) == {"host": host}
    assert resolve(["host", "push_interval"], {"host": NOT_GIVEN}, env) == {"host": "0.0.0.0", "push_interval": 30.0}
    assert "even when it equals the default" in section(docs_page("sdk"), "Settings")


def test_every_constructor_argument_is_documented_once() -> None:
    from trainmon.exporter import TrainingMonitor

    page = docs_page("sdk")
    settings_table = table(section(page, "Settings"))
    other_table = table(section(page, "Arguments without a variable"))
    documented = [name for row in settings_table + other_table for name in code_spans(row["argument"])]
    assert len(documented) == len(set(documented)), "an argument is documented twice"
    assert not set(code_spans("".join(row["argument"] for row in other_table))) & set(SETTINGS), \
        "an argument with a TRAINMON_* variable belongs in the settings table"
    parameters = set(inspect.signature(TrainingMonitor.__init__).parameters) - {"self"}
    assert set(documented) == parameters
