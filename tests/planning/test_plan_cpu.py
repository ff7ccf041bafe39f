"""Planning's CPU (issue 16, round 5): each shortcut gives exactly what the code it replaced gives."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracegen.config import RunConfig
from tracegen.planning import file_readers, flan_options, mix
from tracegen.planning.file_readers import _jsonl_objects, _read_jsonl
from tracegen.planning.mix import Selection
from tracegen.planning.params import chat_body
from tracegen.planning.plan_lines import request_line, request_line_maker
from tracegen.planning.plan_spill import _PLAN_COLUMNS, _cand_record, _plan_values
from tracegen.planning.source_rows import _FAST_SOURCE, _submix_for_task, _task_key, _template_type
from tracegen.planning.tokens import chat_tokens_counter, count_chat_tokens
from tracegen.records import Record


# ---- has_options: start strings found with str.find on ASCII text -----------------------------------------
def _regex_scan(text: str) -> bool:
    """The start-string half of has_options as it was: a case-insensitive regex scan."""
    return any(
        flan_options._is_item(flan_options._MARKER.match(text, h.end()))
        for h in flan_options._HEADER.finditer(text)
    )


def test_a_start_string_inside_another_ends_it() -> None:
    """Why finding every occurrence equals the regex's non-overlapping scan (see _header_then_item)."""
    starts = flan_options._HEADERS_LOWER
    for outer in starts:
        for inner in starts:
            if inner != outer and inner in outer:
                assert outer.endswith(inner), (outer, inner)
            assert not (inner != outer and outer.startswith(inner)), (outer, inner)


def _corpus() -> list[str]:
    rnd = random.Random(16)
    texts = []
    for start in flan_options.OPTION_STARTS:
        for style in flan_options.ITEM_STYLES:
            end = rnd.choice(flan_options.END_STRINGS)
            rendered = flan_options.render_options(["yes", "no", "maybe"], start, style, end)
            casing = rnd.choice([str.lower, str.upper, str.title, str])
            texts += [f"Is it? {rendered}", casing(rendered) + " x", "Available " + casing(rendered)]
    pieces = [*flan_options.OPTION_STARTS, "", " ", "\n", " \t\n  ", "\n\n", "- a", "A. b", "(i) c", "x"]
    pieces += ["1) d", "[-] e", "-- f", "a) g", "II. h", " available choices:", "opt: options:", "Café:"]
    for _ in range(5000):
        texts.append("".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 6))))
    return texts


def test_the_ascii_start_string_search_matches_the_regex_scan() -> None:
    texts = [t for t in _corpus() if t.isascii()]
    assert len(texts) > 4000
    for text in texts:
        lowered = text.lower()
        found = any(map(lowered.__contains__, flan_options._HEADERS_LOWER)) and _regex_scan(text)
        assert flan_options._header_then_item(text, lowered) == found, repr(text)


def test_non_ascii_text_keeps_the_regex_scan() -> None:
    text = "Chooſe from:\n- yes\n- no"  # long s: the regex's case-insensitive match, which str.lower misses
    assert not text.isascii()
    assert flan_options.has_options(text) == _regex_scan(text) or not flan_options._FIRST_ITEM.search(text)


# ---- reading JSON lines a block at a time -----------------------------------------------------------------
GOOD = {"inputs": "Q", "targets": "A", "task_source": "CoT", "task_name": "cot_x", "template_type": "zs_opt"}


def test_jsonl_objects_are_the_objects_the_row_reader_yields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_readers, "_READ_BYTES", 64)  # many blocks, lines across their edges
    good = {
        "inputs": "Q",
        "targets": "A",
        "task_source": "CoT",
        "task_name": "cot_x",
        "template_type": "zs_opt",
    }
    lines = [
        json.dumps(good),
        "",
        "   ",
        "\r",
        json.dumps({**good, "inputs": "é" * 40}, ensure_ascii=False),
        "{not json",
        "[1, 2]",
        '{"inputs": 1180591620717411303424, "targets": "x"}',  # only the standard parser takes 2**70
        json.dumps({**good, "inputs": "y" * 500}),  # over the limit below
        json.dumps({**good, "inputs": "z" * 90}),
        "\xff{}",
        json.dumps({**good, "task_name": "last"}),
    ]
    path = tmp_path / "src.jsonl"
    for ending in ("\n", ""):
        data = ("\n".join(lines) + ending).encode()
        path.write_bytes(data.replace("\xff".encode(), b"\xff"))  # one byte of invalid UTF-8
        expected = [raw for _where, raw in _read_jsonl(path, "src", 300) if isinstance(raw, dict)]
        assert len(expected) == 5
        assert list(_jsonl_objects(path, 300)) == expected


def _reference_read_jsonl(path: Path, label: str, max_line_bytes: int) -> list[tuple[str, Any]]:
    """The row reader as it was: line by line with readline (a line over the limit never held whole)."""
    out: list[tuple[str, Any]] = []
    with open(path, "rb") as f:
        lineno = 0
        while line := f.readline(max_line_bytes + 1):
            lineno += 1
            where = f"{label}:{lineno}"
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                size = len(line)
                while (more := f.readline(1 << 20)) and not more.endswith(b"\n"):
                    size += len(more)
                size += len(more)
                out.append(
                    (where, ("line_too_long", f"is {size:,} bytes, over the {max_line_bytes:,} limit", None))
                )
            elif line.strip():
                value = file_readers._decode_line(line)
                out.append(
                    (where, value if isinstance(value, dict) else (value.reason, value.problem, value.raw))
                )
    return out


HOSTILE_LINES = [
    json.dumps(GOOD),
    "",
    "   ",
    "\r",
    json.dumps({**GOOD, "inputs": "é" * 40}, ensure_ascii=False),
    "{not json",
    '{"a": 1',
    "[1, 2]",
    '{"inputs": 1180591620717411303424}',
    json.dumps({**GOOD, "inputs": "y" * 500}),
    "[" * 5000 + "]" * 5000,
    "\xff{}",
    json.dumps({**GOOD, "task_name": "last"}),
]


@pytest.mark.parametrize("block", [7, 64, 301, 1 << 16])
@pytest.mark.parametrize("ending", ["\n", "", "\n\n", "y" * 700])
def test_the_row_reader_reads_blocks_as_it_read_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, ending: str
) -> None:
    monkeypatch.setattr(file_readers, "_READ_BYTES", block)
    path = tmp_path / "src.jsonl"
    path.write_bytes(("\n".join(HOSTILE_LINES) + ending).encode().replace("\xff".encode(), b"\xff"))
    for limit in (300, 600, 100_000):
        got = [
            (where, raw if isinstance(raw, dict) else (raw.reason, raw.problem, raw.raw))
            for where, raw in _read_jsonl(path, "L", limit)
        ]
        assert got == _reference_read_jsonl(path, "L", limit)
        assert list(_jsonl_objects(path, limit)) == [raw for _, raw in got if isinstance(raw, dict)]


# ---- the fast task key -----------------------------------------------------------------------------------
def _slow_task_key(raw: dict[str, Any], hint: str) -> tuple[str, str, str] | None:
    source = raw.get("task_source") or raw.get("_task_source")
    task = raw.get("task")
    if isinstance(source, str):
        submix = {**{k.lower(): v for k, v in _FAST_SOURCE.items()}, "niv": "niv", "flan": "flan"}.get(
            source.strip().lower()
        )
    elif isinstance(task, str):
        submix = _submix_for_task(task)
    else:
        return None
    name = raw.get("task_name") or raw.get("_task_name") or task
    if submix is None or submix == "dialog" or not isinstance(name, str):
        return None
    template_raw = raw.get("template_type") or raw.get("_template_type")
    template = _template_type(template_raw) if isinstance(template_raw, str) else None
    if template is None and not isinstance(template_raw, str):
        template = "zs_opt" if "zs_opt" in hint else None
    return (submix, name, template) if template else None


@pytest.mark.parametrize("source", ["CoT", "NIv2", "Flan2021", "P3", "T0", "Dialog", "cot ", "", None, 3])
@pytest.mark.parametrize("template", ["zs_opt", "zs_noopt", "fs_opt", "ZS-OPT", "", None])
@pytest.mark.parametrize("name", ["t1", "", None, ["x"]])
def test_the_fast_task_key_is_the_slow_one(source: Any, template: Any, name: Any) -> None:
    raw = {"task_source": source, "template_type": template, "task_name": name, "_task_name": "alt"}
    assert _task_key(raw, "x/zs_opt/") == _slow_task_key(raw, "x/zs_opt/")


# ---- plan and request lines without a Record each -------------------------------------------------------
@pytest.mark.parametrize("model", ["gpt-4o-mini", "o3-mini"])
@pytest.mark.parametrize("system", ["", 'You are "careful".\n\u00e9\u2028'])
def test_request_lines_encoded_around_the_messages_are_the_same(model: str, system: str) -> None:
    config = RunConfig(model=model, max_tokens=77)
    make = request_line_maker(lambda messages: chat_body(messages, config))
    record = Record(id="cot.1", submix="cot", question='Why "x"?\\\n\x00\U0001f600', system_prompt=system)
    assert make(record.id, system, record.question) == request_line(
        record.id, chat_body(record.messages(), config)
    )
    assert json.loads(make(record.id, system, record.question))["body"]["messages"] == record.messages()


def test_a_body_without_the_mark_is_encoded_whole() -> None:
    make = request_line_maker(lambda messages: {"model": "m", "n": len(messages)})
    assert make("a.1", "S", "Q") == request_line("a.1", {"model": "m", "n": 2})


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_chat_tokens_counter_counts_what_count_chat_tokens_counts(encoding: str) -> None:
    count = chat_tokens_counter(encoding)
    for system, question in [("", "Hi"), ("You are a helpful assistant.", "2+2?\n- 3\n- 4"), ("S", "")]:
        messages = Record(id="", submix="", question=question, system_prompt=system).messages()
        assert count(system, question) == count_chat_tokens(messages, encoding)


def test_plan_values_are_the_records_columns() -> None:
    cand = ("niv", 7, "Q?", "A", "task1_x", "zs_noopt", "f.jsonl:3", 5, "Sys", None)
    record = _replace_tokens(_cand_record(cand), 42)
    assert _plan_values(cand, 42) == tuple(getattr(record, name) for name in _PLAN_COLUMNS)


def _replace_tokens(record: Record, tokens: int) -> Record:
    record.prompt_tokens = tokens
    return record


def test_no_line_ends_inside_the_mark() -> None:
    assert re.search(r"[\n\r]", json.dumps("\x00tracegen-messages\x00")) is None


# ---- the pooled submixes (CoT, NIv2) sampled with whole-array steps ---------------------------------------
def _reference_pooled(
    counts: list[int], quota: int, cap: int | None, rng: np.random.RandomState
) -> Selection:
    """_pooled as it was: a few arrays per task."""
    tasks, locals_ = [], []
    for t, c in enumerate(counts):
        if c == 0:
            continue
        chosen = rng.permutation(c)[:cap].astype(np.int64) if cap is not None and c > cap else np.arange(c)
        tasks.append(np.full(len(chosen), t, dtype=np.int64))
        locals_.append(chosen.astype(np.int64))
    if not tasks:
        return Selection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    pool_task, pool_local = np.concatenate(tasks), np.concatenate(locals_)
    pick = rng.permutation(len(pool_task))[:quota]
    return Selection(pool_task[pick], pool_local[pick])


@pytest.mark.parametrize("cap", [None, 1, 3, 20])
def test_pooled_draws_what_it_drew_task_by_task(cap: int | None) -> None:
    rnd = random.Random(cap)
    for case in range(60):
        counts = [rnd.choice([0, 0, 1, 2, 5, 30]) for _ in range(rnd.randint(0, 40))]
        quota = rnd.randint(1, 1 + sum(counts))
        got = mix._pooled(counts, quota, cap, np.random.RandomState(case))
        want = _reference_pooled(counts, quota, cap, np.random.RandomState(case))
        assert got.task.tolist() == want.task.tolist() and got.local.tolist() == want.local.tolist()
        assert got.task.dtype == want.task.dtype == got.local.dtype == np.int64
