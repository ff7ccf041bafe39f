"""--decontaminate: evaluation items planted in the source (case and spacing changed) never reach the plan."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from helpers.flan import frow, write_jsonl
from tracegen.cli import app
from tracegen.config import RunConfig
from tracegen.errors import ConfigError
from tracegen.planning.decontaminate import Decontaminator, load_eval_set, normalize_words, parse_spec
from tracegen.planning.plan import build_plan
from tracegen.planning.sources import Rejection

VOCAB = [f"w{i}x" for i in range(4000)]
EVAL_VOCAB = [f"{w}" for w in ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")]


def sentence(rng: random.Random, n_words: int, vocab: list[str]) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n_words)) + "?"


def disguise(rng: random.Random, text: str) -> str:
    """Change case and spacing the way copies of an eval item differ in the wild."""
    out = []
    for word in text.split(" "):
        word = word.upper() if rng.random() < 0.3 else word.title() if rng.random() < 0.3 else word
        out.append(word)
    seps = ["  ", "\n", " \t ", " "]
    return "".join(w + rng.choice(seps) for w in out).strip()


def make_evals(tmp: Path, rng: random.Random) -> tuple[Path, Path, list[str], list[str]]:
    """Two evaluation sets: JSONL (question + choices, every string column) and Parquet (named column)."""
    vocab = [f"{a}{i}" for a in EVAL_VOCAB for i in range(300)]
    long_a = [sentence(rng, rng.randint(14, 60), vocab) for _ in range(150)]
    short_a = [sentence(rng, rng.randint(2, 12), vocab) for _ in range(50)]
    rows = [
        {"question": q, "choices": [sentence(rng, 3, vocab) for _ in range(4)], "answer": 1} for q in long_a
    ]
    rows += [{"question": q, "choices": [], "answer": 0} for q in short_a]
    a = write_jsonl(tmp / "eval_a.jsonl", rows)
    long_b = [sentence(rng, rng.randint(14, 40), vocab) for _ in range(100)]
    b = tmp / "eval_b.parquet"
    pq.write_table(pa.table({"prompt": long_b, "notes": ["x " * 20] * len(long_b)}), b)
    return a, b, long_a + short_a, long_b


def test_recall_on_planted_items_is_one_and_no_clean_row_is_dropped(tmp_path: Path) -> None:
    rng = random.Random(7)
    eval_a, eval_b, items_a, items_b = make_evals(tmp_path, rng)
    rows: list[dict[str, Any]] = []
    planted: dict[str, str] = {}  # question -> eval set
    for i in range(3000):
        rows.append(frow(sentence(rng, rng.randint(5, 80), VOCAB), "flan", task=f"task{i % 40}"))
    for item in items_a:
        words = len(item.split())
        text = disguise(rng, item)
        # long items are wrapped in a FLAN template; short ones are the whole question (exact match)
        q = f"Answer the following question.\n\n{text}\nOPTIONS:\n- yes\n- no" if words >= 13 else text
        planted[q] = str(eval_a)
    for item in items_b:
        q = f"Q: {disguise(rng, item)} A:"
        planted[q] = str(eval_b)
    for j, q in enumerate(planted):
        rows.insert(rng.randrange(len(rows)), frow(q, "flan", task=f"planted{j % 7}"))
    src = write_jsonl(tmp_path / "src" / "flan.jsonl", rows)

    config = RunConfig(
        source=[str(src)],
        n=len(rows),
        mix={"flan": 1},
        decontaminate=[str(eval_a), f"{eval_b}:prompt"],
    )
    rejected: list[Rejection] = []
    with build_plan(config, on_reject=rejected.append) as plan:
        planned = {r.question for r in plan}
        stats = plan.stats
    dropped = [r for r in rejected if r.reason == "contaminated"]
    dropped_q = {r.record["question"] for r in dropped if r.record}
    recall = len(dropped_q & planted.keys()) / len(planted)
    assert recall == 1.0
    assert dropped_q <= planted.keys()  # no background row dropped (precision 1)
    assert not planted.keys() & planned
    assert stats.planned_total == len(rows) - len(planted)
    assert stats.dropped["contaminated"] == len(planted)
    assert stats.decontaminated == {
        str(eval_a): sum(1 for s in planted.values() if s == str(eval_a)),
        str(eval_b): len(items_b),
    }
    for r in dropped:
        assert r.stage == "plan" and r.record is not None
        assert r.record["eval_set"] == planted[r.record["question"]]
        assert r.record["eval_item"]
        assert r.record["eval_set"] in r.detail


def test_matching_rules() -> None:
    dec = Decontaminator(ngram=5)
    dec.add("evalset", ["The quick brown fox jumps over the lazy dog", "Paris", ""])
    assert dec.size == {"evalset": 2}
    hit = dec.match("Intro: THE quick,  brown\nfox jumps!! and more")
    assert hit is not None and hit.how == "ngram" and hit.eval_set == "evalset"
    assert hit.item.startswith("The quick")
    assert dec.match("quick brown fox jumps") is None  # 4 words < 5-gram, not equal to an item
    assert dec.match("  paris ") is not None and dec.match("  paris ").how == "exact"  # type: ignore[union-attr]
    assert dec.match("Is Paris in France?") is None  # short items only match exactly
    strict = Decontaminator(ngram=5, min_matches=3)
    strict.add("e", ["one two three four five six seven eight nine ten"])
    assert strict.match("one two three four five six") is None  # 2 shared 5-grams
    assert strict.match("zero one two three four five six seven") is not None  # 3 shared


def test_spec_parsing_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_spec("evals/mmlu.jsonl") == ("evals/mmlu.jsonl", None)
    assert parse_spec("evals/mmlu.jsonl:question,choices") == ("evals/mmlu.jsonl", ["question", "choices"])
    assert parse_spec("cais/mmlu@test:question") == ("cais/mmlu@test", ["question"])
    f = write_jsonl(tmp_path / "e.jsonl", [{"q": "a b c", "n": 3, "tags": ["x y", "z"]}])
    assert load_eval_set(str(f)) == (str(f), ["a b c", "x y", "z"])
    with pytest.raises(ConfigError, match=r"no column nope in .*columns: n, q, tags"):
        load_eval_set(f"{f}:nope")
    with pytest.raises(ConfigError, match=r"--decontaminate 'missing\.jsonl'"):
        load_eval_set("missing.jsonl")
    with pytest.raises(ConfigError, match="not a Hub id"):
        load_eval_set("no such thing")
    arr = tmp_path / "e.json"
    arr.write_text(json.dumps([{"q": "one"}, {"q": "two"}]))
    assert load_eval_set(f"{arr}:q")[1] == ["one", "two"]

    import datasets

    def fake_load(repo_id: str, split: str | None = None) -> Any:
        assert repo_id == "org/evalset" and split == "test"
        return datasets.Dataset.from_list([{"question": "hub item one", "label": 2}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_eval_set("org/evalset@test") == ("org/evalset@test", ["hub item one"])


def test_cli_dry_run_decontaminates_and_changes_the_plan_fingerprint(tmp_path: Path) -> None:
    rows = [frow(f"question number {i} about topic {i % 5} with some extra words here") for i in range(40)]
    rows.append(frow("What is the capital of France?"))
    src = write_jsonl(tmp_path / "src.jsonl", rows)
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"question": "what is the CAPITAL of   france"}])
    out = tmp_path / "run"
    args = ["run", "--source", str(src), "--n", "41", "--model", "gpt-4o-mini", "--output-dir", str(out)]
    result = CliRunner().invoke(app, [*args, "--dry-run", "--decontaminate", str(ev)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "plan_stats.json").read_text())
    assert stats["decontaminated"] == {str(ev): 1} and stats["planned_total"] == 40
    assert "capital of France" not in (out / "plan.jsonl").read_text()
    lines = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert [x["reason"] for x in lines] == ["contaminated"]
    # the same run dir without decontamination is another plan: nothing was spent, so it is simply re-planned
    again = CliRunner().invoke(app, [*args, "--dry-run"])
    assert again.exit_code == 0, again.output
    assert "capital of France" in (out / "plan.jsonl").read_text()
    bad = CliRunner().invoke(app, [*args, "--dry-run", "--decontaminate", "nowhere.parquet"])
    assert bad.exit_code == 1 and "nowhere.parquet" in bad.output


# --- the fast matcher against a straightforward reference ----------------------------------------------------

_REF_WORD = re.compile(r"[^\W_]+")
# words that normalise in interesting ways: case, digits, underscores (split), accents, eszett, Greek sigma,
# CJK, a combining mark (not alphanumeric: splits a word), a ligature
_VOCAB = [
    *["the", "The", "fox", "FOX", "42", "x_y", "café", "CAFÉ", "naïve", "straße", "STRASSE", "ΣΊΣΥΦΟΣ"],
    *["σίσυφος", "数学", "e\u0301t\u00e9", "ﬁne", "a", "b", "c", "d", "e", "f", "g", "h"],
]
_SEPS = [" ", "  ", "\n", "\t", ", ", "!? ", " -- ", "_", "\u00a0", "\u3000", "...", " (", ") "]


def _ref_words(text: str) -> list[str]:
    return _REF_WORD.findall(text.casefold())


def _ref_matcher(
    sets: list[tuple[str, list[str]]], n: int, min_matches: int
) -> Callable[[str], tuple[str, str, str] | None]:
    """The rules written out plainly: word tuples (no hashes), a dict per kind, every gram scanned."""
    items: list[tuple[str, str]] = []
    first_item: dict[tuple[str, ...], int] = {}
    exact: dict[tuple[str, ...], int] = {}
    for name, texts in sets:
        for text in texts:
            words = _ref_words(text)
            if not words:
                continue
            items.append((name, text[:300]))
            if len(words) >= n:
                for i in range(len(words) - n + 1):
                    first_item.setdefault(tuple(words[i : i + n]), len(items) - 1)
            else:
                exact.setdefault(tuple(words), len(items) - 1)

    def match(question: str) -> tuple[str, str, str] | None:
        words = _ref_words(question)
        if tuple(words) in exact:
            return (*items[exact[tuple(words)]], "exact")
        row = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        if min_matches == 1:
            for g in row:
                if g in first_item:
                    return (*items[first_item[g]], "ngram")
            return None
        shared: dict[int, int] = {}
        for g in set(row):
            if g in first_item:
                shared[first_item[g]] = shared.get(first_item[g], 0) + 1
        best = [i for i, c in shared.items() if c >= min_matches]
        return ("*", "*", "ngram") if best else None  # which item is reported then follows set order

    return match


def _phrase(rng: random.Random, n_words: int) -> str:
    return "".join(rng.choice(_VOCAB) + rng.choice(_SEPS) for _ in range(n_words)).strip()


def _variant(rng: random.Random, text: str) -> str:
    """The same words with case, spacing and punctuation changed."""
    words = _REF_WORD.findall(text)
    out = [w.upper() if rng.random() < 0.3 else w.lower() if rng.random() < 0.3 else w for w in words]
    return "".join(w + rng.choice(_SEPS) for w in out)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("min_matches", [1, 2])
def test_verdicts_equal_the_reference_on_random_text(n: int, min_matches: int) -> None:
    rng = random.Random(n * 100 + min_matches)
    sets = [
        (
            f"set{s}",
            [_phrase(rng, rng.randint(0, 3 * n + 4)) for _ in range(rng.randint(1, 40))] + ["", " ?! "],
        )
        for s in range(3)
    ]
    dec = Decontaminator(ngram=n, min_matches=min_matches)
    for name, texts in sets:
        dec.add(name, texts)
    reference = _ref_matcher(sets, n, min_matches)
    items = [t for _, texts in sets for t in texts]
    questions = ["", "   ", "?!", "a", _phrase(rng, n - 1), _phrase(rng, n)]
    for _ in range(1500):
        item = _variant(rng, rng.choice(items))
        cut = _REF_WORD.findall(item)
        kind = rng.randrange(7)
        if kind == 0:
            questions.append(item)  # the whole item
        elif kind == 1:
            questions.append(item + _phrase(rng, rng.randint(1, 20)))  # at the row's start
        elif kind == 2:
            questions.append(_phrase(rng, rng.randint(1, 20)) + " " + item)  # at the row's end
        elif kind == 3:  # a slice of the item, exactly n words or around it
            start = rng.randrange(len(cut) + 1)
            piece = " ".join(cut[start : start + n + rng.randint(-1, 1)])
            questions.append(f"{_phrase(rng, rng.randint(0, 9))} {piece}. {_phrase(rng, rng.randint(0, 9))}")
        else:
            questions.append(_phrase(rng, rng.randint(0, 4 * n + 20)))
    hits = 0
    for q in questions:
        got = dec.match(q)
        want = reference(q)
        verdict = None if got is None else (got.eval_set, got.item, got.how)
        if want is not None and want[0] == "*":  # min_matches > 1: a matching item, whichever is reported
            assert verdict is not None and verdict[2] == "ngram", q
            hits += 1
            continue
        assert verdict == want, q
        hits += want is not None
    assert hits > 100  # the random rows do exercise matching


def test_ascii_fast_path_normalises_like_the_regex() -> None:
    rng = random.Random(3)
    alphabet = [chr(c) for c in range(128)]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert normalize_words(text) == _ref_words(text), repr(text)
    for text in ["Straße  CAFÉ", "ΣΊΣΥΦΟΣ", "e\u0301te", "ﬁne_day", "İstanbul", "x\u00a0y", "数学题"]:
        assert normalize_words(text) == _ref_words(text)


def test_a_shared_ngram_anywhere_in_a_long_question_is_found() -> None:
    """The prefilter looks at every stride-th position of the question: a shared n-gram at any offset passes."""
    item = " ".join(f"i{j}" for j in range(13))
    dec = Decontaminator()
    dec.add("e", [item])
    for offset in range(12):
        for tail in range(12):
            words = [f"o{j}" for j in range(offset)] + item.split() + [f"t{j}" for j in range(tail)]
            assert dec.match(" ".join(words)) is not None, (offset, tail)
            words[offset + (offset * 7 + tail) % 13] = "changed"  # one word of the shared 13-gram
            assert dec.match(" ".join(words)) is None, (offset, tail)
