"""clean() writes records with orjson's native dataclass support; pinned to the dict form it replaced."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from tracegen.cleaning.postprocess import _record_dict, _record_line, _rejected_line
from tracegen.records import Record
from tracegen.rundir import json_line


def _records() -> list[Record]:
    base: dict[str, Any] = {"id": "flan.1", "submix": "flan", "question": "Q?"}
    return [
        Record(**base),
        Record(**{**base, "response": 'naïve ‘quotes’ \u2028 😀 \\ "x"', "cost_usd": 1e-05}),
        Record(**{**base, "system_message_id": 3, "agrees_with_target": False, "finish_reason": None}),
        Record(**{**base, "cost_usd": float("nan"), "prompt_tokens": -1, "train_system_prompt": ""}),
        Record(**{**base, "completion_tokens": 2**70}),  # orjson refuses: the stdlib spells it
        Record(**{**base, "cost_usd": 0.1 + 0.2, "reasoning_tokens": 2**63 - 1}),
    ]


def test_record_line_equals_dict_line() -> None:
    for record in _records():
        assert _record_line(record) == json_line(_record_dict(record)) == json_line(record.to_dict())


def test_rejected_line_equals_dict_line() -> None:
    for record in _records():
        want = json_line(
            {"id": record.id, "stage": "filter", "reason": "r", "detail": "d", "record": record.to_dict()}
        )
        assert _rejected_line(record, "filter", "r", "d") == want
        assert json.loads(want)["record"]["id"] == "flan.1"


def test_lone_surrogate_fails_the_same_way() -> None:
    record = Record(id="flan.1", submix="flan", question="Q?", response="\ud800")
    for write in (_record_line, lambda r: json_line(r.to_dict())):
        with pytest.raises(UnicodeEncodeError):
            write(record)


def test_from_dict_ignores_unknown_keys_and_keeps_values() -> None:
    data = {"retried": [], "id": "t0.2", "answered_at": 1.5, "submix": "t0", "question": "q", "target": "B"}
    record = Record.from_dict(data)
    assert record.id == "t0.2" and record.target == "B" and record.key
    assert orjson.loads(_record_line(record))["target"] == "B"
