"""Render the Alertmanager config and templates in this folder into a runnable config directory.

    python alertmanager/render.py --out DIR       # reads the environment; writes DIR/alertmanager.yml

What it does, in order:
- fills ``${VAR}`` and ``${VAR:-default}`` in every string of ``alertmanager.yml`` and in ``templates/*.tmpl``
  (values are substituted after YAML parsing, so a value can never inject YAML);
- writes the Slack webhook (``SLACK_WEBHOOK_URL``) and SMTP password (``SMTP_AUTH_PASSWORD``) to files under
  ``DIR/secrets/`` (mode 0600) and points ``api_url_file`` / ``auth_password_file`` at them, unless
  ``SLACK_WEBHOOK_URL_FILE`` / ``SMTP_AUTH_PASSWORD_FILE`` already name files;
- removes Slack integrations when no webhook is configured and email integrations when ``EMAIL_NOTIFICATIONS``
  is empty, and removes every integration when ``ENABLE_NOTIFICATIONS`` is not true: the routes stay, the
  receivers are not wired;
- drops keys whose value rendered empty.

docker-compose.yml runs this before Alertmanager starts; the tests run the same function. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SOURCE_DIR = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")
TRUE_WORDS = {"1", "true", "yes", "on"}
INTEGRATIONS = ("slack_configs", "email_configs")


class RenderError(ValueError):
    """The environment cannot produce a valid config (e.g. notifications on but nothing to send them to)."""


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in `text`; an unset VAR without default becomes empty."""
    return PLACEHOLDER.sub(lambda match: env.get(match.group(1)) or (match.group(2) or ""), text)


def enabled(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in TRUE_WORDS


def _fill(node: Any, env: Mapping[str, str]) -> Any:
    """Substitute in every string of a parsed YAML tree; drop mapping keys that rendered empty."""
    if isinstance(node, dict):
        filled = {key: _fill(value, env) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value != ""}
    if isinstance(node, list):
        return [_fill(item, env) for item in node]
    if isinstance(node, str):
        text = substitute(node, env)
        whole = PLACEHOLDER.fullmatch(node.strip()) is not None
        if whole and text.strip().lower() in {"true", "false"}:
            return text.strip().lower() == "true"
        return text
    return node


def _write_secret(directory: Path, name: str, value: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value.strip())
    return str(path)


def _secret_env(env: Mapping[str, str], out_dir: Path) -> dict[str, str]:
    """The environment plus *_FILE variables pointing at secret files written from plain secret variables."""
    merged = dict(env)
    secrets_dir = out_dir / "secrets"
    for plain, file_var in (("SLACK_WEBHOOK_URL", "SLACK_WEBHOOK_URL_FILE"),
                            ("SMTP_AUTH_PASSWORD", "SMTP_AUTH_PASSWORD_FILE")):
        if not merged.get(file_var) and merged.get(plain):
            merged[file_var] = _write_secret(secrets_dir, plain.lower(), merged[plain])
    return merged


def _wire_receivers(config: dict, env: Mapping[str, str]) -> list[str]:
    """Strip integrations that are disabled or unconfigured; return what stays wired, for the log line."""
    notify = enabled(env, "ENABLE_NOTIFICATIONS")
    keep = {
        "slack_configs": notify and bool(env.get("SLACK_WEBHOOK_URL_FILE")),
        "email_configs": notify and bool(env.get("EMAIL_NOTIFICATIONS", "").strip()),
    }
    if keep["email_configs"] and not env.get("SMTP_SMARTHOST"):
        raise RenderError("EMAIL_NOTIFICATIONS is set but SMTP_SMARTHOST (host:port) is not")
    wired = []
    for receiver in config.get("receivers", []):
        for integration in INTEGRATIONS:
            if integration in receiver and not keep[integration]:
                del receiver[integration]
            elif integration in receiver:
                wired.append(f"{receiver['name']}:{integration.removesuffix('_configs')}")
    return wired


def render(out_dir: Path, env: Mapping[str, str] | None = None, source_dir: Path = SOURCE_DIR) -> dict:
    """Render `source_dir`'s alertmanager.yml and templates into `out_dir`; return the rendered config."""
    env = _secret_env(os.environ if env is None else env, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _fill(yaml.safe_load((source_dir / "alertmanager.yml").read_text()), env)
    wired = _wire_receivers(config, env)
    templates_out = out_dir / "templates"
    templates_out.mkdir(exist_ok=True)
    for template in sorted((source_dir / "templates").glob("*.tmpl")):
        (templates_out / template.name).write_text(substitute(template.read_text(), env))
    config["templates"] = [str(templates_out / "*.tmpl")]
    (out_dir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    state = ", ".join(wired) if wired else "none (ENABLE_NOTIFICATIONS is off or nothing is configured)"
    print(f"trainmon: rendered {out_dir / 'alertmanager.yml'}; wired receivers: {state}", file=sys.stderr)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for alertmanager.yml and templates/")
    parser.add_argument("--source", type=Path, default=SOURCE_DIR, help="folder holding alertmanager.yml")
    args = parser.parse_args(argv)
    try:
        render(args.out, source_dir=args.source)
    except RenderError as error:
        print(f"trainmon: cannot render the Alertmanager config: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
