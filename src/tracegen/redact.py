"""The one redaction: every string that leaves tracegen goes through here.

Terminal lines, log records, failed.jsonl, stats.json, the dataset card and exception messages are passed
through :func:`redact`, which knows

- the secrets of this process: ``OPENAI_API_KEY``, ``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN``,
  ``AZURE_OPENAI_API_KEY``, any environment variable named like a credential (``*_API_KEY``, ``*_TOKEN``,
  ``*_SECRET``, ``*_PASSWORD``), and every key tracegen was handed in code (:func:`register_secret`: the
  endpoint keys, a pool's keys, the Hub token);
- key-shaped values wherever they appear (``sk-…``, ``hf_…``, ``Bearer …``);
- URL credentials (``scheme://user:password@host`` becomes ``scheme://<redacted>@host``).

It is applied to a *whole* body before it is cut for an excerpt (:func:`excerpt`), so a cut can never leave
a key's prefix behind. :func:`scrub` does the same for JSON-like data and also blanks values stored under
credential-named keys. :func:`terminal_text` additionally escapes control characters (terminal escape
sequences from a server never reach the terminal raw); the CLI prints it as a ``rich.text.Text``, so no user
or server text is ever parsed as Rich markup.

Log records of the ``tracegen`` loggers are redacted when they are made (a log-record factory installed on
import), so a handler a user adds never sees a secret either.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "excerpt",
    "redact",
    "redact_url",
    "register_secret",
    "scrub",
    "secret_values",
    "terminal_text",
]

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(
    r"(?i)(^|[_\-.])(api[_\-]?key|apikey|secret|client[_\-]?secret|password|passwd|authorization|"
    r"auth[_\-]?token|access[_\-]?token|bearer|credentials?|hf[_\-]?token|token)$"
)
_SECRET_ENV = re.compile(r"(?i)(api[_\-]?key|token|secret|password)$")
_ENV_NAMES = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AZURE_OPENAI_API_KEY")
_SECRET_VALUE = re.compile(
    r"(\bsk-[A-Za-z0-9_\-]{12,}|\bhf_[A-Za-z0-9]{12,}|\b(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{12,})"
)
#: ``scheme://user[:password]@`` anywhere in a text (the user part alone can be a token, too).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{1,15}://)[^\s/@?#]+@")
#: C0 and C1 control characters except tab; newline and CR are escaped too (one line per message).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

_registered: set[str] = set()
_lock = threading.Lock()
#: Shortest secret value replaced verbatim (shorter strings are too likely to be ordinary words).
MIN_SECRET_CHARS = 4


def register_secret(value: str | None) -> None:
    """Remember ``value`` (an API key, a token) so every later :func:`redact` masks it."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _registered.add(value)


@functools.lru_cache(maxsize=16)
def _secret_env_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The environment variables among ``names`` named like a credential. Cached by the names (which rarely
    change, and are read afresh each call); the values are always read anew."""
    return tuple(k for k in names if _SECRET_ENV.search(k))


def _known(extra: Iterable[str]) -> list[str]:
    env = os.environ
    values = {env.get(n, "") for n in _ENV_NAMES}
    values |= {v for k in _secret_env_names(tuple(env)) if len(v := env.get(k, "")) >= 8}
    with _lock:
        values |= _registered
    values |= set(extra)
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every known secret, key-shaped value and URL credential replaced by ``<redacted>``."""
    if not text:
        return text
    return _redact_known(text, _known(extra))


def _redact_known(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _SECRET_VALUE.sub(REDACTED, text)
    if "://" in text and "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return text


def redact_url(url: str) -> str:
    """A URL as it may be shown or stored: no ``user:password@``, no query string (keys hide there)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return redact(url.split("?", 1)[0])
    if not parts.scheme or not parts.hostname:
        return redact(url.split("?", 1)[0])
    netloc = parts.hostname + (f":{port}" if port else "")
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def excerpt(raw: bytes | str, limit: int = 200) -> str:
    """At most ``limit`` characters of a body, redacted *before* it is cut; control characters escaped."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    head = text[: limit * 4 + 4096]  # a bounded window, redacted whole, then cut
    clean = _escape_controls(redact(head)).strip()
    if len(clean) > limit or len(head) < len(text):
        return clean[:limit] + "…"
    return clean


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def terminal_text(text: str) -> str:
    """``text`` safe for a terminal: redacted, control characters escaped (print it as ``Text``, not
    markup)."""
    return _escape_controls(redact(text))


def secret_values(data: Any) -> set[str]:
    """String values stored under credential-named keys anywhere in JSON-like ``data``."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if _SECRET_KEY.search(str(k)) and isinstance(v, str) and len(v) >= 4 and v != REDACTED:
                    found.add(v)
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(data)
    return found


def scrub(data: Any, extra: Iterable[str] = ()) -> Any:
    """A copy of JSON-like ``data`` with secrets removed: values under credential-named keys blanked, every
    string redacted (known secrets, key-shaped values, URL credentials; bare URLs lose their query)."""
    known = {*secret_values(data), *(s for s in extra if s and len(s) >= MIN_SECRET_CHARS)}
    secrets = _known(known)  # once per call, not once per string

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                str(k): (
                    REDACTED if _SECRET_KEY.search(str(k)) and value[k] not in (None, "") else walk(value[k])
                )
                for k in value
            }
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if isinstance(value, str):
            text = _redact_known(value, secrets) if value else value
            if "://" in text and "?" in text and not any(c.isspace() for c in text):
                text = redact_url(text)
            return text
        return value

    return walk(data)


# ---- log records -------------------------------------------------------------------------------------------
_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if record.name == "tracegen" or record.name.startswith("tracegen."):
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return record
        record.msg = redact(message)
        record.args = None
    return record


if getattr(logging.getLogRecordFactory(), "__name__", "") != "_redacting_factory":
    logging.setLogRecordFactory(_redacting_factory)
