"""How long the server asks us to wait, in every form servers and gateways use.

In order of preference:

1. ``retry-after-ms`` (OpenAI, milliseconds), then ``retry-after`` (seconds, or an HTTP date);
2. the same headers under a gateway's prefix: ``llm_provider-retry-after`` (LiteLLM relays the upstream's
   headers prefixed), ``x-ms-retry-after-ms`` (Azure) -- any header whose name ends in ``-retry-after-ms`` or
   ``-retry-after``;
3. ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` (durations such as ``"6m0s"``, ``"1s"``,
   ``"20ms"``; also prefixed) for the limit whose ``x-ratelimit-remaining-*`` is 0 -- the time until that
   limit has room again.

Returns None when the answer says nothing (the caller backs off on its own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from .limiter import parse_reset_s

__all__ = ["header", "parse_seconds", "retry_after_s"]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of ``name``, or of the same header under a prefix (``llm_provider-<name>``), or None."""
    value = headers.get(name)
    if value:
        return value
    suffix = "-" + name
    for key in headers:
        if key.lower().endswith(suffix):
            value = headers[key]
            if value:
                return value
    return None


def parse_seconds(raw: str, *, now: float | None = None) -> float | None:
    """``retry-after``'s value: seconds (``"20"``, ``"1.5"``) or an HTTP date; None when unreadable."""
    raw = raw.strip()
    try:
        return _sane(float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


def _sane(value: float) -> float | None:
    """A wait in seconds, or None for a negative, NaN or infinite figure (ignored, not obeyed)."""
    return value if math.isfinite(value) and value >= 0 else None


def _ms(raw: str) -> float | None:
    try:
        value = _sane(float(raw))
    except ValueError:
        return None
    return None if value is None else value / 1000.0


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``headers`` (see the module docs), or None."""
    for name in ("retry-after-ms", "retry-after"):
        raw = headers.get(name)
        if raw:
            wait = _ms(raw) if name.endswith("ms") else parse_seconds(raw, now=now)
            if wait is not None:
                return wait
    for name in ("retry-after-ms", "retry-after"):
        raw = header(headers, name)
        if raw:
            wait = _ms(raw) if name.endswith("ms") else parse_seconds(raw, now=now)
            if wait is not None:
                return wait
    return _reset_wait(headers)


def _reset_wait(headers: Mapping[str, str]) -> float | None:
    waits: list[float] = []
    for kind in ("requests", "tokens"):
        remaining = header(headers, f"x-ratelimit-remaining-{kind}")
        reset = header(headers, f"x-ratelimit-reset-{kind}")
        if remaining is None or reset is None:
            continue
        try:
            exhausted = float(remaining) <= 0
        except ValueError:
            continue
        wait = parse_reset_s(reset)
        if exhausted and wait is not None:
            waits.append(wait)
    return max(waits) if waits else None
