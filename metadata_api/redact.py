"""Secrets out of logs and error messages: `redact(text)` and `redact_url(url)`, one rule for every path.

`redact` masks, wherever they appear in a text:
- the password of any URL (`scheme://user:pass@host` -> `scheme://user:***@host`);
- bearer and basic credentials (`Bearer <x>` -> `Bearer ***`) and trainmon API tokens (`tm_...` -> `tm_***`);
- `password=...`-style pairs (libpq connection strings) and `token=`/`api_key=`/`secret=` query parameters;
- every value registered with `register_secret` (`register_settings` registers the database password, the
  Alertmanager credentials and the Slack webhook), plain and URL-encoded.

`trainmon.metadata_api.logging` applies it to every log record as a safety net (`RedactingFilter`); code that
builds a message from a URL or an error should still call it where the message is made.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter registered values would mask ordinary words

_URL_PASSWORD = re.compile(r"(?P<start>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s'\"<>:@]*):[^/?#\s'\"<>]*@")
_AUTH_HEADER = re.compile(r"(?i)\b(?P<scheme>bearer|basic)(?P<sep>\s+)[A-Za-z0-9._~+/=-]{8,}")
_API_TOKEN = re.compile(r"\btm_[A-Za-z0-9_-]{8,}")
_KEY_VALUE = re.compile(r"(?i)\b(?P<key>password|passwd|pwd|access_token|api_key|apikey|secret|token)"
                        r"(?P<sep>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)")

_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` (and its URL-encoded form) in everything `redact` handles from now on."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        _secrets.update({value, quote(value, safe=""), unquote(value)})


def register_url_secrets(url: str | None, whole: bool = False) -> None:
    """Register the password of `url` (its user name too); `whole`: the URL itself is a secret (a webhook)."""
    if not url:
        return
    if whole:
        register_secret(url)
        register_secret(urlsplit(url).path.strip("/"))
    try:
        parts = urlsplit(url)
        register_secret(parts.password)
    except ValueError:  # not a URL we can parse: the pattern rules still apply
        return


def register_settings(settings: Any) -> None:
    """Register the secrets a Settings object holds (database password, Alertmanager URL, Slack webhook)."""
    register_url_secrets(getattr(settings, "database_url", None))
    register_url_secrets(getattr(settings, "alertmanager_url", None))
    register_url_secrets(getattr(settings, "slack_webhook_url", None), whole=True)


def redact(text: str) -> str:
    """`text` with every credential it carries masked (see the module documentation)."""
    if not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['start']}:{MASK}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['scheme']}{m['sep']}{MASK}", text)
    text = _API_TOKEN.sub(f"tm_{MASK}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def redact_url(url: str | None) -> str:
    """`url` without its password (`http://user:pass@host/x` -> `http://user:***@host/x`)."""
    return redact(url or "")
