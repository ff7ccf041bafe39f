"""The JSON lines of ``plan.jsonl`` and ``requests.jsonl``, byte for byte what ``json.dumps(...,
ensure_ascii=False)`` writes, built without the per-line encoder set-up and dict building (a fifth of
writing a plan).

A plan line is ``Record.to_dict()`` of a planned record: the fields the plan sets (:data:`_PLAN_COLUMNS`,
the first fields of :class:`~tracegen.records.Record`, in order) then the answer fields at their defaults,
the same for every planned record. Strings go through ``json.encoder.encode_basestring``, the encoder
``json.dumps`` itself uses when ``ensure_ascii`` is off; anything but ``str``/``int``/``None`` goes through
``json.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from ..records import _FIELD_ORDER, Record
from .plan_spill import _PLAN_COLUMNS

#: ``json.dumps(obj, ensure_ascii=False)`` without building an encoder per call: the same text.
_dumps = json.JSONEncoder(ensure_ascii=False).encode

_HEADS = tuple(
    ("{" if i == 0 else ", ") + encode_basestring(name) + ": " for i, name in enumerate(_PLAN_COLUMNS)
)
_DIRECT = _FIELD_ORDER[: len(_PLAN_COLUMNS)] == _PLAN_COLUMNS
"""Whether Record's fields start with the plan columns (else every line goes through to_dict)."""
_answer_defaults = {
    k: v
    for k, v in Record(id="", submix="", question="", key="-").to_dict().items()
    if k not in _PLAN_COLUMNS
}
_TAIL = ", " + _dumps(_answer_defaults)[1:] if _answer_defaults else "}"


def _value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return _dumps(value)


def plan_line(values: tuple[Any, ...]) -> str:
    """``json.dumps(record.to_dict(), ensure_ascii=False)`` of the planned record with these column values."""
    if not _DIRECT:
        return _dumps(Record(**dict(zip(_PLAN_COLUMNS, values, strict=True))).to_dict())
    return "".join(map(str.__add__, _HEADS, map(_value, values))) + _TAIL


_REQUEST_HEAD = '{"custom_id": '
_REQUEST_MIDDLE = ', "method": "POST", "url": "/v1/chat/completions", "body": '


def request_line(custom_id: str, body: dict[str, Any]) -> str:
    """The Batch API input line ``{"custom_id", "method", "url", "body"}`` as ``json.dumps`` writes it."""
    return _REQUEST_HEAD + encode_basestring(custom_id) + _REQUEST_MIDDLE + _dumps(body) + "}"


#: Stands for the messages in a body built once per plan; a JSON string no config value can spell.
_MESSAGES_MARK = "\x00tracegen-messages\x00"


def request_line_maker(
    body_for: Callable[[list[dict[str, str]]], dict[str, Any]],
) -> Callable[[str, str, str], str]:
    """``(custom_id, system_prompt, question) -> request_line(custom_id, body_for(messages))``, the same text.

    Every planned body differs only in its messages (``Record.messages()``: a system message unless it is
    empty, then the user's), so the rest of the body is encoded once, around a mark, and each line only
    encodes its two strings.
    """
    template = _dumps(body_for(_MESSAGES_MARK))  # type: ignore[arg-type]
    parts = template.split(encode_basestring(_MESSAGES_MARK))
    if len(parts) != 2:  # the mark is not where the messages go: encode each body whole
        return lambda custom_id, system, question: request_line(
            custom_id, body_for(_messages(system, question))
        )
    head = _REQUEST_HEAD.__add__
    middle = _REQUEST_MIDDLE + parts[0] + '[{"role": "system", "content": '
    middle_user = _REQUEST_MIDDLE + parts[0] + '[{"role": "user", "content": '
    tail = "}]" + parts[1] + "}"

    def line(custom_id: str, system: str, question: str) -> str:
        if system:
            return (
                head(encode_basestring(custom_id))
                + middle
                + encode_basestring(system)
                + '}, {"role": "user", "content": '
                + encode_basestring(question)
                + tail
            )
        return head(encode_basestring(custom_id)) + middle_user + encode_basestring(question) + tail

    return line


def _messages(system: str, question: str) -> list[dict[str, str]]:
    return Record(id="", submix="", question=question, system_prompt=system, key="-").messages()
