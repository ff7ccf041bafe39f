"""JSON helpers for the hot path: orjson when installed, the standard library otherwise.

``request_key`` never depends on which library is installed: it always hashes the stdlib's canonical
spelling, so the done set of a run directory is stable across machines.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "dumps", "dumps_line", "loads", "request_key"]

try:  # pragma: no cover - depends on the environment
    import orjson as _orjson

    def dumps(obj: Any) -> bytes:
        """Compact JSON as UTF-8 bytes."""
        return _orjson.dumps(obj)

    _NEWLINE = _orjson.OPT_APPEND_NEWLINE

    def dumps_line(obj: Any) -> bytes:
        """Compact JSON as UTF-8 bytes, newline included (one JSONL line)."""
        return _orjson.dumps(obj, option=_NEWLINE)

    def loads(data: bytes | str) -> Any:
        """Parse JSON from bytes or str."""
        return _orjson.loads(data)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        """Compact JSON as UTF-8 bytes."""
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    def dumps_line(obj: Any) -> bytes:
        """Compact JSON as UTF-8 bytes, newline included (one JSONL line)."""
        return dumps(obj) + b"\n"

    def loads(data: bytes | str) -> Any:
        """Parse JSON from bytes or str."""
        return json.loads(data)


_KEY_FIELDS: tuple[str, ...] = ("model", "messages", "temperature", "top_p", "max_tokens")
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _stdlib_canonical(body: dict[str, Any]) -> bytes:
    return _canonical(body).encode()


def _plain_floats(body: dict[str, Any]) -> bool:
    # repr() spells 1e-05 where orjson spells 1e-5: only floats in plain decimal notation are safe
    for value in body.values():
        if type(value) is float and value != 0.0 and not 1e-4 <= abs(value) < 1e15:
            return False
    return True


_SAMPLE: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": 'naïve "q" \\ \n\t\x01\x1f\x7f\u2028 😀 /'}],
    "temperature": 0.7,
    "top_p": 1.0,
    "max_tokens": 5,
    "n": 0.0001,
}

try:  # pragma: no cover - depends on the environment
    import orjson as _orjson_mod

    _ORJSON_SORTED = _orjson_mod.OPT_SORT_KEYS
    _orjson_canonical_ok = _orjson_mod.dumps(_SAMPLE, option=_ORJSON_SORTED) == _stdlib_canonical(_SAMPLE)
except ImportError:  # pragma: no cover
    _orjson_canonical_ok = False


def canonical_json(body: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8 (no ASCII escapes): the one spelling request keys are computed from.

    The stdlib's spelling is the definition; orjson is used only when it was checked to spell the same.
    """
    if _orjson_canonical_ok and _plain_floats(body):
        out: bytes = _orjson_mod.dumps(body, option=_ORJSON_SORTED)
        return out
    return _stdlib_canonical(body)


def request_key(body: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the body's keyed fields.

    A chat body's keyed fields are ``{model, messages, temperature, top_p, max_tokens}`` (missing ones count
    as null); a reasoning body's (one that sets ``max_completion_tokens``) are ``{model, messages,
    max_completion_tokens}``. ``reasoning_effort`` is keyed when the body has one. For the bodies tracegen
    sends this is the hash of exactly the bytes sent, so online and Batch API runs key a request alike
    (switching modes never pays twice). The same definition as ``tracegen.testing.request_key``, so run
    directories and the fake server's ledger agree.
    """
    if body.get("max_completion_tokens") is not None and body.get("max_tokens") is None:
        keyed: dict[str, Any] = {
            "model": body.get("model"),
            "messages": body.get("messages"),
            "max_completion_tokens": body["max_completion_tokens"],
        }
    else:
        keyed = {k: body.get(k) for k in _KEY_FIELDS}
    if body.get("reasoning_effort") is not None:  # keyed only when sent: chat-model keys are unchanged
        keyed["reasoning_effort"] = body["reasoning_effort"]
    return hashlib.sha256(canonical_json(keyed)).hexdigest()
