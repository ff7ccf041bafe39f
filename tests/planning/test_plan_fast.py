"""Planning's fixed costs (issue 16): the same plan files whichever store holds the candidates, the verified
cache of parsed BPE ranks, and the faster scans that must match what they replace."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.flan import SAMPLE, frow, write_jsonl
from tracegen.config import RunConfig
from tracegen.errors import ConfigError
from tracegen.planning import flan_options, plan_spill, source_rows, tokens
from tracegen.planning.plan import build_plan, write_plan
from tracegen.records import _xxh, normalize_text, pair_hash

PLAN_FILES = ("plan.jsonl", "requests.jsonl", "plan_stats.json")


def planned(
    tmp_path: Path, config: RunConfig, *, shard: tuple[int, int] | None = None, **kw: Any
) -> dict[str, Any]:
    """sha256 (16 hex) of the plan files and of the rejections, and whether the store went to its file."""
    rejected: list[str] = []
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    with build_plan(config, on_reject=lambda r: rejected.append(json.dumps(r.to_dict())), **kw) as plan:
        write_plan(plan, out, shard=shard)
        on_file = plan._store.on_file
    got = {name: hashlib.sha256((out / name).read_bytes()).hexdigest()[:16] for name in PLAN_FILES}
    got["rejected"] = hashlib.sha256("\n".join(rejected).encode()).hexdigest()[:16]
    got["on_file"] = on_file
    return got


# The digests main gave before issue 16 (computed with its code, the sample named relative to examples/ so
# that the ``source`` fields do not depend on the checkout): memory store, spill file and a store that moves
# to the file midway all still write these bytes.
GOLDEN = [
    (
        {"n": 400, "seed": 0, "skip_bad_records": True},
        None,
        False,
        ("1b6898bc609b6f51", "5f8e1768728ca112", "9b0705c8c5396ecf", "58a32529e1a66aa3"),
    ),
    (
        {"n": 300, "seed": 3, "model": "gpt-4", "max_tokens": 100},
        (1, 3),
        False,
        ("23a0da433eb24458", "2c6dff611c7699ac", "a619db9d9c792d1b", "e97545829544795f"),
    ),
    (
        {"n": 250, "seed": 5, "model": "o3-mini"},
        None,
        True,
        ("f18181da9ff30116", "de30c97fc63d0b68", "8bb40dfe00e29bcb", "ad8738156d17740c"),
    ),
]


@pytest.mark.parametrize(("memory_rows", "on_file"), [(None, False), (0, True), (100, True)])
@pytest.mark.parametrize(("params", "shard", "dedup_questions", "digests"), GOLDEN)
def test_plan_files_are_byte_identical_in_memory_and_on_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    memory_rows: int | None,
    on_file: bool,
    params: dict[str, Any],
    shard: tuple[int, int] | None,
    dedup_questions: bool,
    digests: tuple[str, ...],
) -> None:
    if memory_rows is not None:
        monkeypatch.setattr(plan_spill, "MEMORY_ROWS", memory_rows)
    monkeypatch.chdir(SAMPLE.parent)
    config = RunConfig(source=[SAMPLE.name], **params)
    got = planned(tmp_path, config, shard=shard, dedup_questions=dedup_questions)
    assert (got["plan.jsonl"], got["requests.jsonl"], got["plan_stats.json"], got["rejected"]) == digests
    assert got["on_file"] is on_file


def _no_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracegen.planning.plan as plan_module

    original = plan_module._candidate_thresholds
    monkeypatch.setattr(plan_module, "_candidate_thresholds", lambda *a: dict.fromkeys(original(*a), 0))


@pytest.mark.parametrize("memory_rows", [None, 0, 20])
def test_second_pass_gives_the_same_files_in_either_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_rows: int | None
) -> None:
    """With no first-pass candidates every row comes from the second pass (which moves a store of 20 rows
    to its file midway); the plan files are those of one pass."""
    config = RunConfig(source=[str(SAMPLE)], n=300, seed=3)
    one = planned(tmp_path, config)
    if memory_rows is not None:
        monkeypatch.setattr(plan_spill, "MEMORY_ROWS", memory_rows)
    _no_candidates(monkeypatch)
    two = planned(tmp_path, config)
    assert one["on_file"] is False and two["on_file"] is (memory_rows is not None)
    one.pop("on_file"), two.pop("on_file")
    assert json.loads((tmp_path / "run1" / "plan_stats.json").read_text())["source_passes"] == 2
    stats = [json.loads((tmp_path / f"run{i}" / "plan_stats.json").read_text()) for i in (0, 1)]
    for s in stats:
        s.pop("source_passes"), s.pop("candidates")
    assert stats[0] == stats[1]
    assert one["plan.jsonl"] == two["plan.jsonl"] and one["requests.jsonl"] == two["requests.jsonl"]


def test_duplicate_rejections_are_the_same_in_either_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_jsonl(
        tmp_path / "f.jsonl", [frow(f"{q} {i % 7}", "niv") for i, q in enumerate("ABACAB" * 20)]
    )
    got = []
    for memory_rows in (plan_spill.MEMORY_ROWS, 0):
        monkeypatch.setattr(plan_spill, "MEMORY_ROWS", memory_rows)
        rejected: list[dict[str, Any]] = []
        with build_plan(
            RunConfig(source=[str(src)], n=20, mix={"niv": 1.0}),
            on_reject=lambda r, out=rejected: out.append(r.to_dict()),
            dedup_questions=True,
        ) as plan:
            got.append((list(plan.lines()), rejected, plan.stats.to_dict()))
    assert got[0][1] and all(r["reason"] == "duplicate" for r in got[0][1])
    assert got[0] == got[1]


def test_a_closed_plan_in_memory_refuses_to_be_read() -> None:
    plan = build_plan(RunConfig(source=[str(SAMPLE)], n=10))
    assert not plan._store.on_file
    plan.close()
    with pytest.raises(Exception, match="closed"):
        list(plan)


# ---- the cache of parsed BPE ranks -----------------------------------------------------------------------
@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_rank_cache_is_written_then_used(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = tokens._parse_ranks("cl100k_base")
    assert tokens._load_ranks("cl100k_base") == parsed
    (cached,) = (cache_dir / "bpe").iterdir()
    assert cached.name.startswith("cl100k_base-")

    def no_parse(name: str) -> dict[bytes, int]:
        raise AssertionError("parsed again although the cache is valid")

    monkeypatch.setattr(tokens, "_parse_ranks", no_parse)
    assert tokens._load_ranks("cl100k_base") == parsed


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # a flipped payload bit: its own sha256 no longer matches
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b.replace(tokens._EXPECTED_SHA256["cl100k_base"].encode(), b"0" * 64, 1),  # other file
        lambda b: b"",
        lambda b: b"tracegen-bpe-ranks 1 x y\n" + b[b.index(b"\n") + 1 :],
    ],
)
def test_a_damaged_rank_cache_is_rebuilt(cache_dir: Path, damage: Any) -> None:
    parsed = tokens._load_ranks("cl100k_base")
    path = tokens._rank_cache_file("cl100k_base")
    path.write_bytes(damage(path.read_bytes()))
    assert tokens._read_rank_cache("cl100k_base") is None
    assert tokens._load_ranks("cl100k_base") == parsed
    assert tokens._read_rank_cache("cl100k_base") == parsed  # rewritten whole


def test_a_forged_payload_with_its_own_digest_still_needs_the_official_header(cache_dir: Path) -> None:
    tokens._load_ranks("cl100k_base")
    path = tokens._rank_cache_file("cl100k_base")
    import marshal

    payload = marshal.dumps({b"a": 0})
    header = b" ".join([tokens._CACHE_MAGIC, b"f" * 64, hashlib.sha256(payload).hexdigest().encode()])
    path.write_bytes(header + b"\n" + payload)
    assert tokens._read_rank_cache("cl100k_base") is None


def test_unwritable_cache_dir_only_costs_the_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TRACEGEN_CACHE_DIR", str(blocker))
    assert tokens._load_ranks("cl100k_base") == tokens._parse_ranks("cl100k_base")


def test_rank_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACEGEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tokens.rank_cache_dir() == tmp_path / "tracegen"


def test_the_package_file_is_still_checked_when_the_cache_is_built(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(tokens._EXPECTED_SHA256, "cl100k_base", "0" * 64)
    with pytest.raises(ConfigError, match="corrupt"):
        tokens._load_ranks("cl100k_base")
    assert not (cache_dir / "bpe").exists() or not list((cache_dir / "bpe").iterdir())


# ---- faster scans, the same answers ----------------------------------------------------------------------
_PLAIN_HEADER = re.compile(r"(?:" + flan_options._START_RE + r")[ \t]*\n?[ \t]*", re.IGNORECASE)


def test_option_header_lookahead_admits_exactly_the_case_insensitive_first_letters() -> None:
    first = re.compile("(?i)[" + flan_options._START_FIRST + "]")
    literal = re.compile("(?i)(?:" + "|".join(sorted({s[0] for s in flan_options.OPTION_STARTS[1:]})) + ")")
    for code in range(0x10000):
        if 0xD800 <= code < 0xE000:
            continue
        c = chr(code)
        assert bool(first.fullmatch(c)) == bool(literal.fullmatch(c)), hex(code)


@pytest.mark.parametrize(
    "text",
    [
        "Question? OPTIONS:\n- yes\n- no",
        "pick from:\n (A). one (B). two; Options are: 1. x 2. y",
        "\u017fELECT FROM: - a - b",  # long s: case-insensitively an "s"
        "\u212aoptions: no header here, OPT: (i) one (ii) two",  # Kelvin sign
        "Available options: a  Choices: b  choose your answer from:\n\n[-] c",
        "no header at all, just Ordinary prose, possibly: maybe.",
    ],
)
def test_option_header_scan_finds_the_same_spans(text: str) -> None:
    assert [m.span() for m in flan_options._HEADER.finditer(text)] == [
        m.span() for m in _PLAIN_HEADER.finditer(text)
    ]


def test_pair_hash_with_a_cached_system_message_is_the_exact_pair_key() -> None:
    for system, question in [("You are helpful.", "Q?"), ("ＡＢＣ  x", "ﬁ Q"), ("", "q")]:
        expected = _xxh(normalize_text(system) + "\x00" + normalize_text(question))
        assert pair_hash(system, question) == pair_hash(system, question) == expected


@pytest.mark.parametrize("spelling", ["zs_opt", "ZS-NOOPT", "fsOpt", "fs_noopt ", "zero", "", "zs_opt2"])
def test_template_type_memo_spells_as_before(spelling: str) -> None:
    expected = source_rows._TEMPLATE_TYPES.get(re.sub(r"[^a-z]", "", spelling.lower()))
    assert source_rows._template_type(spelling) == expected


# ---- plan and request lines: json.dumps's bytes ----------------------------------------------------------
_TRICKY = [
    "",
    "plain",
    'quote " and \\ backslash',
    "tab\tnew\nline\r\x00\x1f\x7f",
    "é ü ß 中文 🙂",
    "\u2028\u2029",
    "</script>",
]


@pytest.mark.parametrize("seed", range(5))
def test_plan_and_request_lines_are_what_json_dumps_writes(seed: int) -> None:
    import random

    from tracegen.planning.plan_lines import plan_line, request_line
    from tracegen.planning.plan_spill import _PLAN_COLUMNS, _plan_record
    from tracegen.records import Record

    rng = random.Random(seed)

    def text() -> str:
        return "".join(rng.choice(_TRICKY) for _ in range(rng.randint(0, 4)))

    config = RunConfig(source=[str(SAMPLE)], model=rng.choice(["gpt-4o-mini", "o3-mini", "my-local-llm"]))
    for _ in range(200):
        record = Record(
            id=f"niv.{rng.randint(0, 10**9)}",
            submix=rng.choice(["cot", "niv", "flan", "t0"]),
            question=text() or "q",
            system_prompt=text(),
            system_message_id=rng.choice([None, 1, 16]),
            train_system_prompt=rng.choice([None, text()]),
            task_name=text(),
            template_type=rng.choice(["zs_opt", "zs_noopt"]),
            target=text(),
            prompt_tokens=rng.randint(0, 10**6),
            source=text(),
        )
        values = tuple(getattr(record, name) for name in _PLAN_COLUMNS)
        assert _plan_record(values) == record
        assert plan_line(values) == json.dumps(record.to_dict(), ensure_ascii=False)
        from tracegen.planning.plan import request_body

        body = request_body(record, config)
        expected = {"custom_id": record.id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        assert request_line(record.id, body) == json.dumps(expected, ensure_ascii=False)


def test_rank_from_a_cached_prefix_is_the_hash_of_the_joined_parts() -> None:
    from tracegen.planning.plan_pass import _rank

    for seed in (0, -3, 12345678901234):
        for submix in ("cot", "niv", "flan", "t0"):
            for index in (0, 1, 9, 10, 12345, 10**9):
                data = "\x00".join([str(seed), "rank", submix, str(index)]).encode()
                expected = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1
                assert _rank(seed, submix, index) == expected


def test_long_candidates_move_to_the_file_by_their_text_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(SAMPLE.parent)
    config = RunConfig(source=[SAMPLE.name], n=400, seed=0, skip_bad_records=True)
    monkeypatch.setattr(plan_spill, "MEMORY_CHARS", 10_000)
    got = planned(tmp_path, config)
    assert got["on_file"] is True
    assert (got["plan.jsonl"], got["requests.jsonl"], got["plan_stats.json"], got["rejected"]) == GOLDEN[0][3]
