"""Run-directory JSON lines are read with orjson alone, the way the ``jsonlines`` package read them before:
the same values, the same lines accepted (a leading byte-order mark or RFC 7464 record separator), the same
one-line reasons for the ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracegen.rundir import RunDirError, read_jsonl, read_jsonl_numbered


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a": 1}', {"a": 1}),
        (b"\xef\xbb\xbf" + b'{"a": 1}', {"a": 1}),  # a byte-order mark
        (b"\x1e" + b'{"a": 1}', {"a": 1}),  # a record separator
        (b"  [1, 2]  ", [1, 2]),
        (b"null", None),
        (b'"\xc3\xa9 \\u2028"', "é \u2028"),
    ],
)
def test_lines_jsonlines_accepts(tmp_path: Path, raw: bytes, value: object) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(raw + b"\n")
    assert list(read_jsonl_numbered(path)) == [(1, value)]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": "\xff"}', "line is not valid utf-8"),
        (b"{oops", "line contains invalid json"),
        (b"\x1e{oops", "line contains invalid json"),
        (b"\xef\xbb\xbf\xef\xbb\xbf{}", "line contains invalid json"),  # only one skippable character
        (b'{"a": "\\ud800"}', "line contains invalid json"),  # a lone surrogate
        (b"NaN", "line contains invalid json"),
    ],
)
def test_lines_jsonlines_refuses_with_its_reason(tmp_path: Path, raw: bytes, reason: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"ok": 1}\n' + raw + b"\n")
    with pytest.raises(RunDirError) as e:
        list(read_jsonl(path, what="do this"))
    assert str(e.value) == f"{path}:2: not a JSON line ({reason}); do this"
    assert list(read_jsonl(path, skip_invalid=True)) == [{"ok": 1}]
