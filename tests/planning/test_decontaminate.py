"""--decontaminate: evaluation items planted in the source (case and spacing changed) never reach the plan."""

from __future__ import annotations

import json
import random
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
from tracegen.planning.decontaminate import Decontaminator, load_eval_set, parse_spec
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
