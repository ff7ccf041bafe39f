"""clean() writes records with orjson's native dataclass support; pinned to the dict form it replaced."""

from __future__ import annotations

import json
from pathlib import Path
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


def test_read_at_equals_seek_and_read(tmp_path: Path) -> None:
    from tracegen.cleaning.postprocess import _read_at

    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 40
    path.write_bytes(data)
    with path.open("rb") as f:
        for offset, length in [(0, 0), (0, 10), (5, 300), (10230, 50), (10240, 5), (20000, 5), (9000, 4000)]:
            assert _read_at(f, offset, length) == data[offset : offset + length]


def test_scan_skips_blank_lines_like_strip(tmp_path: Path) -> None:
    from tracegen.cleaning.postprocess import _scan

    path = tmp_path / "t.jsonl"
    lines = [b'{"id":"a"}\n', b"\n", b" \t\r\x0b\x0c\n", b'  {"id":"b"}\n', b"\xa0\n", b'{"id":"c"}']
    path.write_bytes(b"".join(lines))
    got = [(offset, length, rid) for offset, length, rid in _scan(path)]
    want, offset = [], 0
    for line in lines:
        if line.strip():
            want.append(offset)
        offset += len(line)
    assert [g[0] for g in got] == want
    assert [g[2] for g in got] == [b"a", b"b", None, b"c"]
