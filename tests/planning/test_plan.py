"""The plan: Orca rules end to end, determinism, prefix shape, dedup, too_long, tokens, run-dir files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.flan import REPO, SAMPLE, frow, grid, write_jsonl
from tracegen.config import RunConfig
from tracegen.errors import BadRecordError, ConfigError, PlanError, RunDirError, SourceError
from tracegen.planning import plan_spill
from tracegen.planning.plan import Plan, PlanStats, build_plan, iter_plan, plan_parameters, write_plan
from tracegen.planning.sources import Rejection, Source, SourceStats
from tracegen.planning.templates import auto_mc_detector
from tracegen.planning.tokens import count_chat_tokens, encoding_for_model, get_encoding
from tracegen.records import Record

ALLOWED = {"cot": {6, 11, 16}, "niv": {1, 2, 5, 7, 9, 12, 13, 14, 15}, "t0": {1, 2, 3, 5, 7}}


def config(source: list[str] | None = None, **kw: Any) -> RunConfig:
    return RunConfig(source=source if source is not None else [str(SAMPLE)], **kw)


@pytest.fixture(scope="module")
def sample_plan() -> Iterator[tuple[Plan, list[Record]]]:
    with build_plan(config(n=400, seed=0)) as plan:
        yield plan, list(plan)


# ---- the Orca rules on the bundled sample ----------------------------------------------------------------
def test_sample_plan_counts_and_drops(sample_plan: tuple[Plan, list[Record]]) -> None:
    plan, records = sample_plan
    s = plan.stats
    assert len(records) == len(plan) == s.planned_total == 400
    assert s.quota == {"cot": 12, "niv": 35, "flan": 196, "t0": 157}
    assert s.planned == s.quota and s.shortfall == {"cot": 0, "niv": 0, "flan": 0, "t0": 0}
    assert Counter(r.submix for r in records) == s.planned
    source_rows = list(Source([str(SAMPLE)]).iter_rows(stats=(src := SourceStats())))
    assert s.dropped["dialog"] == src.dialog_skipped == 20
    assert s.dropped["fewshot"] == sum(r.template_type.startswith("fs_") for r in source_rows)
    assert s.dropped["bigbench"] == 30 and s.rows_read == src.rows_read


def test_zero_shot_only_no_dialog_no_bigbench(sample_plan: tuple[Plan, list[Record]]) -> None:
    _, records = sample_plan
    assert {r.template_type for r in records} <= {"zs_opt", "zs_noopt"}
    assert not any(r.task_name in ("wiki_dialog", "qrecc") for r in records)
    assert not any("bigbench" in r.task_name or "bbh" in r.task_name for r in records if r.submix == "t0")


def test_system_messages_follow_the_submix_lists(sample_plan: tuple[Plan, list[Record]]) -> None:
    plan, records = sample_plan
    for r in records:
        if r.submix == "flan":
            mc = auto_mc_detector(_row(r))
            assert r.system_message_id in ({8, 10} if mc else {3, 4, 7}), r.question
        else:
            assert r.system_message_id in ALLOWED[r.submix]
        if r.system_message_id == 1:
            assert r.system_prompt == "" and [m["role"] for m in r.messages()] == ["user"]
    per_message = Counter(str(r.system_message_id) for r in records)
    assert plan.stats.planned_per_system_message == dict(per_message)
    assert list(plan.stats.planned_per_system_message) == sorted(per_message, key=int)
    assert {r.system_message_id for r in records if r.submix == "flan"} == {3, 4, 7, 8, 10}


def _row(r: Record) -> Any:
    from tracegen.planning.sources import SourceRow

    return SourceRow(r.question, r.target, r.submix, r.task_name, r.template_type, r.source)


def test_ids_are_openorca_style_unique_and_stable_across_n_and_seed(
    sample_plan: tuple[Plan, list[Record]],
) -> None:
    _, records = sample_plan
    ids = [r.id for r in records]
    assert len(set(ids)) == len(ids)
    assert all(
        i.split(".")[0] == r.submix and i.split(".")[1].isdigit() for i, r in zip(ids, records, strict=True)
    )
    by_id = {r.id: (r.question, r.source) for r in records}
    with build_plan(config(n=150, seed=5)) as other:
        for r in other:
            if r.id in by_id:
                assert by_id[r.id] == (r.question, r.source)
    assert records[0].key and all(len(r.key) == 32 for r in records)


def test_niv_cap_algorithm1_and_shortfall_with_a_large_n() -> None:
    with build_plan(config(n=100_000, mix="uniform")) as plan:
        records = list(plan)
        s = plan.stats
    per_task = Counter(r.task_name for r in records if r.submix == "niv")
    assert per_task["task1001_count_words_starting_with_letter"] == 300  # 340 eligible rows, cap 300
    assert s.niv_tasks_capped == 1
    assert s.planned["niv"] == s.eligible["niv"] - 40  # everything else there is
    for sub in ("cot", "flan", "t0"):
        assert s.planned[sub] == s.eligible[sub]  # take everything there is...
        assert s.shortfall[sub] == s.quota[sub] - s.eligible[sub] > 0  # ...and report the rest
    assert s.planned_total == sum(s.planned.values()) < 100_000  # no silent redistribution


def test_shares_follow_a_user_table() -> None:
    with build_plan(config(n=100, mix={"flan": 3.0, "t0": 1.0})) as plan:
        assert plan.stats.quota == {"cot": 0, "niv": 0, "flan": 75, "t0": 25}
        assert Counter(r.submix for r in plan) == {"flan": 75, "t0": 25}


def test_algorithm1_takes_small_tasks_whole(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "f.jsonl",
        grid({("flan", "big_a:1.0.0"): 200, ("flan", "tiny:1.0.0"): 5, ("flan", "big_b:1.0.0"): 200}),
    )
    with build_plan(config([str(src)], n=60, mix={"flan": 1.0})) as plan:
        per_task = Counter(r.task_name for r in plan)
    assert per_task["tiny:1.0.0"] == 5 and abs(per_task["big_a:1.0.0"] - per_task["big_b:1.0.0"]) < 20


# ---- determinism and prefix shape ------------------------------------------------------------------------
def files_of(run_dir: Path) -> dict[str, bytes]:
    return {
        name: (run_dir / name).read_bytes() for name in ("plan.jsonl", "requests.jsonl", "plan_stats.json")
    }


def test_same_seed_byte_identical_other_seed_different(tmp_path: Path) -> None:
    outs = []
    for i, seed in enumerate((11, 11, 12)):
        with build_plan(config(n=300, seed=seed)) as plan:
            write_plan(plan, tmp_path / str(i))
        outs.append(files_of(tmp_path / str(i)))
    assert outs[0] == outs[1]
    assert outs[0]["plan.jsonl"] != outs[2]["plan.jsonl"]
    assert sorted(p.name for p in (tmp_path / "0").iterdir()) == [
        "plan.jsonl",
        "plan_stats.json",
        "requests.jsonl",
    ]


def test_byte_identical_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from tracegen.config import RunConfig\n"
        "from tracegen.planning.plan import build_plan, write_plan\n"
        "with build_plan(RunConfig(source=[sys.argv[1]], n=300, seed=4)) as p:\n"
        "    write_plan(p, sys.argv[2])\n"
    )
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", script, str(SAMPLE), str(tmp_path / hash_seed)], env=env, check=True
        )
    assert files_of(tmp_path / "1") == files_of(tmp_path / "2")


def test_every_prefix_of_the_plan_follows_the_mix(sample_plan: tuple[Plan, list[Record]]) -> None:
    plan, records = sample_plan
    total = plan.stats.planned_total
    seen: Counter[str] = Counter()
    for k, r in enumerate(records, start=1):
        seen[r.submix] += 1
        for sub, planned in plan.stats.planned.items():
            assert abs(seen[sub] - k * planned / total) < 1, (k, sub)


# ---- dedup -----------------------------------------------------------------------------------------------
def fixed_system(tmp_path: Path) -> str:
    path = tmp_path / "fixed.yaml"
    path.write_text(
        yaml.safe_dump({"templates": [{"name": "fixed", "submix": "flan", "system_prompt": "S"}]})
    )
    return str(path)


def test_duplicate_pairs_dropped_before_sampling(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "f.jsonl", [frow(q) for q in ["A", "B", "A", "C", "A", "B"]])
    with build_plan(config([str(src)], n=3, mix={"flan": 1.0}, templates=fixed_system(tmp_path))) as plan:
        records = list(plan)
    assert plan.stats.dropped["duplicate"] == 3
    assert sorted(r.question for r in records) == ["A", "B", "C"]  # duplicates took no quota slot
    assert {r.id for r in records} == {"flan.0", "flan.1", "flan.3"}  # first occurrence kept
    assert plan.stats.eligible["flan"] == 3 and plan.stats.shortfall["flan"] == 0


def test_same_question_with_other_system_message_is_not_a_pair_duplicate(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "f.jsonl", [frow("A", "niv")] * 40)
    with build_plan(config([str(src)], n=100, mix={"niv": 1.0})) as plan:
        records = list(plan)
    assert len(records) == len({r.system_prompt for r in records}) == 9  # one per NIv2 message
    assert plan.stats.dropped["duplicate"] == 31


def test_normalised_question_dedup_is_optional(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "f.jsonl", [frow("Hello  World", "niv"), frow("hello world\n", "niv"), frow("X", "niv")]
    )
    with build_plan(config([str(src)], n=10, mix={"niv": 1.0}), dedup_questions=True) as plan:
        assert sorted(r.question for r in plan) == ["Hello  World", "X"]
        assert plan.stats.dropped["duplicate"] == 1 and plan.stats.dedup == "question"


# ---- too long --------------------------------------------------------------------------------------------
def long_source(tmp_path: Path) -> str:
    rows = [frow("short one"), frow("word " * 9000), frow("short two")]
    return str(write_jsonl(tmp_path / "long.jsonl", rows))


def test_too_long_is_rejected_with_a_reason(tmp_path: Path) -> None:
    rejected: list[Rejection] = []
    cfg = config([long_source(tmp_path)], n=10, model="gpt-4", max_tokens=1024, mix={"flan": 1.0})
    with build_plan(cfg, on_reject=rejected.append) as plan:
        assert sorted(r.question for r in plan) == ["short one", "short two"]
        assert plan.stats.dropped["too_long"] == 1
    (rej,) = rejected
    assert (rej.id, rej.stage, rej.reason) == ("flan.1", "plan", "too_long")
    assert "8192-token context window of gpt-4" in rej.detail
    assert rej.record is not None and rej.record["prompt_tokens"] > 8192 - 1024
    json.dumps(rej.to_dict())


def test_too_long_fails_the_plan_when_asked(tmp_path: Path) -> None:
    cfg = config(
        [long_source(tmp_path)], n=10, model="gpt-4", max_tokens=1024, on_too_long="fail", mix={"flan": 1.0}
    )
    with pytest.raises(PlanError, match=r"flan\.1 .* is too long"):
        build_plan(cfg)


def test_unknown_model_has_no_context_check(tmp_path: Path) -> None:
    cfg = config([long_source(tmp_path)], n=10, model="my-local-llm", mix={"flan": 1.0}, on_too_long="fail")
    with build_plan(cfg) as plan:
        assert plan.stats.planned_total == 3 and plan.stats.dropped["too_long"] == 0


def test_max_tokens_leaving_no_room_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lower --max-tokens"):
        build_plan(config(model="gpt-4", max_tokens=8192))


# ---- tokens and files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4"])
def test_prompt_tokens_are_what_the_api_bills(model: str) -> None:
    with build_plan(config(n=120, model=model)) as plan:
        records = list(plan)
        encoding = encoding_for_model(model)
        assert plan.stats.encoding == encoding
        for r in records:
            assert r.prompt_tokens == count_chat_tokens(r.messages(), encoding) > 0
        assert plan.stats.prompt_tokens == sum(r.prompt_tokens for r in records)
        assert sum(plan.stats.prompt_tokens_per_submix.values()) == plan.stats.prompt_tokens


def test_run_dir_files(tmp_path: Path, sample_plan: tuple[Plan, list[Record]]) -> None:
    plan, records = sample_plan
    stats = write_plan(plan, tmp_path / "run")
    run = tmp_path / "run"
    plan_lines = (run / "plan.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in plan_lines] == [r.to_dict() for r in records]
    requests = [json.loads(x) for x in (run / "requests.jsonl").read_text(encoding="utf-8").splitlines()]
    cfg = plan.config
    for req, r in zip(requests, records, strict=True):
        assert set(req) == {"custom_id", "method", "url", "body"}
        assert (req["custom_id"], req["method"], req["url"]) == (r.id, "POST", "/v1/chat/completions")
        assert req["body"] == {
            "model": cfg.model,
            "messages": r.messages(),
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
        }
    on_disk = json.loads((run / "plan_stats.json").read_text())
    assert on_disk == stats.to_dict() == plan.stats.to_dict()
    assert PlanStats.from_dict(on_disk) == plan.stats
    assert [r.to_dict() for r in iter_plan(run)] == [r.to_dict() for r in records]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left


def test_shards_partition_the_plan(tmp_path: Path, sample_plan: tuple[Plan, list[Record]]) -> None:
    plan, records = sample_plan
    shards = []
    for k in range(3):
        stats = write_plan(plan, tmp_path / str(k), shard=(k, 3))
        ids = [r.id for r in iter_plan(tmp_path / str(k))]
        assert ids == [r.id for r in records[k::3]]
        assert stats.shard == f"{k + 1}/3" and stats.planned_total == len(ids)
        assert stats.prompt_tokens == sum(r.prompt_tokens for r in records[k::3])
        assert sum(stats.planned_per_system_message.values()) == len(ids)
        assert json.loads((tmp_path / str(k) / "plan_stats.json").read_text())["shard"] == f"{k + 1}/3"
        shards.append(stats)
    assert sum(s.planned_total for s in shards) == plan.stats.planned_total and plan.stats.shard is None
    with pytest.raises(ConfigError, match="K/N"):
        write_plan(plan, tmp_path / "bad", shard=(3, 3))


def test_iter_plan_errors(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="plan the run first"):
        list(iter_plan(tmp_path))
    (tmp_path / "plan.jsonl").write_text('{"id": "cot.0", "submix": "cot", "question": "Q"}\n{oops\n')
    with pytest.raises(RunDirError, match=r"plan\.jsonl:2"):
        list(iter_plan(tmp_path))


def test_write_plan_to_an_unusable_place(tmp_path: Path, sample_plan: tuple[Plan, list[Record]]) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="cannot create the run directory"):
        write_plan(sample_plan[0], tmp_path / "file" / "run")


def test_plan_parameters(tmp_path: Path) -> None:
    tpl = tmp_path / "t.yaml"
    tpl.write_text(yaml.safe_dump({"templates": [{"name": "a", "submix": "cot", "system_prompt": "x"}]}))
    params = plan_parameters(config(n=10, templates=str(tpl), model="gpt-4"))
    assert params["encoding"] == "cl100k_base" and params["context_window"] == 8192 and params["n"] == 10
    assert set(params) >= {
        "source",
        "seed",
        "mix",
        "niv_max_per_task",
        "templates_sha256",
        "mc_detector",
        "system_message_spelling",
        "max_tokens",
        "on_too_long",
        "dedup",
    }
    json.dumps(params)
    before = params["templates_sha256"]
    tpl.write_text(yaml.safe_dump({"templates": [{"name": "a", "submix": "cot", "system_prompt": "y"}]}))
    assert plan_parameters(config(n=10, templates=str(tpl), model="gpt-4"))["templates_sha256"] != before
    assert plan_parameters(RunConfig())["source"] == ["flan-v2"]
    assert plan_parameters(config(shard="2/4"))["shard"] == "2/4"
    assert plan_parameters(config(mix={"t0": 1.0, "cot": 2.0}))["mix"] == {"cot": 2.0, "t0": 1.0}


# ---- options threaded through ----------------------------------------------------------------------------
def test_template_set_prompt_erasure_in_records(tmp_path: Path) -> None:
    tpl = tmp_path / "t.yaml"
    tpl.write_text(
        yaml.safe_dump(
            {
                "train_system_prompt": "generic",
                "templates": [
                    {"name": "gsm", "task": "cot_gsm8k", "system_prompt": "step", "train_system_prompt": "g2"}
                ],
            }
        )
    )
    with build_plan(config(n=400, templates=str(tpl))) as plan:
        records = list(plan)
    gsm = [r for r in records if r.task_name == "cot_gsm8k"]
    assert gsm and all(
        (r.system_prompt, r.system_message_id, r.train_system_prompt) == ("step", None, "g2") for r in gsm
    )
    assert all(r.train_system_prompt == "generic" for r in records if r.task_name != "cot_gsm8k")
    assert plan.stats.planned_per_system_message["template:gsm"] == len(gsm)


def test_ascii_spelling_and_custom_detector() -> None:
    with build_plan(config(n=200, system_message_spelling="ascii"), mc_detector=lambda row: True) as plan:
        records = list(plan)
    assert all(r.system_prompt.isascii() for r in records)
    assert {r.system_message_id for r in records if r.submix == "flan"} == {8, 10}


def test_bad_records_in_a_plan(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "f.jsonl", [frow("A"), "{broken", frow("B"), {**frow("C"), "inputs": 3}])
    with pytest.raises(BadRecordError, match=r"f\.jsonl:2"):
        build_plan(config([str(src)], n=10))
    rejected: list[Rejection] = []
    with build_plan(config([str(src)], n=10, skip_bad_records=True), on_reject=rejected.append) as plan:
        assert sorted(r.question for r in plan) == ["A", "B"]
        assert plan.stats.dropped["bad_record"] == 2
    assert [(r.id, r.stage, r.reason) for r in rejected] == [
        (f"{src}:2", "source", "malformed_json"),
        (f"{src}:4", "source", "not_a_string"),
    ]


def test_no_eligible_rows_is_a_plan_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "f.jsonl", [frow("A", template="fs_opt"), frow("B", "dialog")])
    with pytest.raises(PlanError, match=r"no eligible rows.*1 dialog, 1 fewshot"):
        build_plan(config([str(src)]))


def test_closed_plan_cannot_be_read(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "f.jsonl", [frow("A")])
    plan = build_plan(config([str(src)], n=1))
    plan.close()
    with pytest.raises(PlanError, match="closed"):
        list(plan)


def _no_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every task's candidates fall short, which forces the fallback second pass."""
    import tracegen.planning.plan as plan_module

    original = plan_module._candidate_thresholds
    monkeypatch.setattr(plan_module, "_candidate_thresholds", lambda *a: dict.fromkeys(original(*a), 0))


def test_one_full_pass_and_the_same_plan_with_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = Source.iter_rows

    def counting(self: Source, *a: Any, **k: Any) -> Any:
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(Source, "iter_rows", counting)
    with build_plan(config(n=300, seed=3)) as plan:
        one = list(plan.lines())
        assert plan.stats.source_passes == 1 and len(calls) == 1
        assert plan.stats.task_sizes_read == "columns+rows"  # parquet by columns, JSON lines whole
        assert plan.stats.candidates < 2 * 300 + 8 * sum(plan.stats.tasks.values())
    _no_candidates(monkeypatch)
    with build_plan(config(n=300, seed=3)) as plan:
        assert plan.stats.source_passes == 2 and len(calls) == 3
        assert list(plan.lines()) == one  # candidates decide the reading, never the plan


def test_source_changing_between_passes_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_jsonl(tmp_path / "f.jsonl", [frow(f"Q{i}") for i in range(20)])
    original = Source.iter_rows
    calls = []

    def changing(self: Source, *a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            write_jsonl(src, [frow(f"Other {i}") for i in range(20)])
        return original(self, *a, **k)

    monkeypatch.setattr(Source, "iter_rows", changing)
    _no_candidates(monkeypatch)
    with pytest.raises(SourceError, match="changed while planning"):
        build_plan(config([str(src)], n=5))


def test_unreachable_hub_source_fails_before_reading() -> None:
    with pytest.raises(SourceError, match="could not be reached"):
        build_plan(config(["someone/flan"]))


# ---- memory ----------------------------------------------------------------------------------------------
MEMORY_TASKS = (
    [("flan", f"f{i}:1.0.0") for i in range(40)]
    + [("t0", f"t{i}") for i in range(40)]
    + [("niv", f"task{i}_x") for i in range(100)]
    + [("cot", f"cot_{i}") for i in range(10)]
)


def big_source(path: Path, rows: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            submix, task = MEMORY_TASKS[i % len(MEMORY_TASKS)]
            f.write(json.dumps(frow(f"Question number {i} about {task}?", submix, task=task)) + "\n")
    return path


@pytest.mark.parametrize(("memory_rows", "limit_mib"), [(0, 5), (1_000, 5), (None, 10)])
def test_planning_heap_stays_small_tracemalloc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_rows: int | None, limit_mib: int
) -> None:
    if memory_rows is not None:  # the candidates move to the SQLite file at once / past 1,000 rows
        monkeypatch.setattr(plan_spill, "MEMORY_ROWS", memory_rows)
    rows = 25_000
    path = big_source(tmp_path / "big.jsonl", rows)
    get_encoding(encoding_for_model("my-local-llm"))  # the tokenizer's tables are not the planner's memory
    tracemalloc.start()
    try:
        with build_plan(config([str(path)], n=2_000, model="my-local-llm")) as plan:
            peak = tracemalloc.get_traced_memory()[1]
            assert plan.stats.rows_read == rows and plan.stats.planned_total == 2_000
            assert plan._store.on_file == (memory_rows is not None)
    finally:
        tracemalloc.stop()
    # Holding just the normalised rows would take ~8.5 MiB here (the raw dicts twice that); with the
    # candidates on file the planner peaks at ~2 MiB (about 50 bytes per row of numpy arrays while
    # sampling); in memory (the default below MEMORY_ROWS candidates) it holds the ~2,500 candidates too.
    assert peak < limit_mib * 2**20, f"peak {peak / 2**20:.1f} MiB"


_RSS_SCRIPT = """
import resource, sys
from tracegen.config import RunConfig
from tracegen.planning.plan import build_plan
from tracegen.planning.tokens import get_encoding
get_encoding("o200k_base")
plan = build_plan(RunConfig(source=[sys.argv[1]], n=2000, model="my-local-llm"))
assert plan.stats.rows_read == int(sys.argv[2]), plan.stats.rows_read
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_rss_is_flat_from_20k_to_200k_rows(tmp_path: Path) -> None:
    peaks_kib = {}
    for rows in (20_000, 200_000):
        path = big_source(tmp_path / f"big{rows}.jsonl", rows)
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(path), str(rows)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        peaks_kib[rows] = int(out.stdout.strip().splitlines()[-1])
    growth_mib = (peaks_kib[200_000] - peaks_kib[20_000]) / 1024
    # 180K more rows held in memory would add ~140 MB; the planner adds a few MB of numpy arrays.
    assert growth_mib < 40, f"peak RSS grew {growth_mib:.1f} MiB ({peaks_kib})"


# ---- examples --------------------------------------------------------------------------------------------
def test_api_example_runs_offline(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    runpy.run_path(str(REPO / "examples" / "api_example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "planned per submix" in out and '"budget_buys_requests"' in out


def test_bundled_sample_is_what_the_generator_writes(tmp_path: Path) -> None:
    import importlib.util

    import pyarrow.parquet as pq

    spec = importlib.util.spec_from_file_location(
        "make_flan_sample", REPO / "examples" / "make_flan_sample.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OUT = tmp_path
    module.main()
    for path in sorted(SAMPLE.glob("*.jsonl")):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    for path in sorted(SAMPLE.glob("*.parquet")):
        assert pq.read_table(tmp_path / path.name).equals(pq.read_table(path)), path.name
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) < 2 * 2**20


def test_example_config_loads_and_plans() -> None:
    from tracegen.config import load_config

    cfg = load_config(REPO / "examples" / "config.yaml")
    assert cfg.source == ["examples/flan_sample"] and cfg.n == 400
    with build_plan(cfg.model_copy(update={"source": [str(SAMPLE)]})) as plan:
        assert plan.stats.planned_total == 400


def test_submix_absent_from_source_is_left_out_and_shares_renormalised(tmp_path: Path) -> None:
    from tracegen.config import RunConfig
    from tracegen.planning.plan import build_plan

    cot_only = Path(__file__).resolve().parents[2] / "examples" / "flan_sample" / "cot_submix.jsonl"
    config = RunConfig(source=[str(cot_only)], n=50, output_dir=tmp_path)
    with build_plan(config) as plan:
        stats = plan.stats
        records = list(plan)
    assert stats.absent == ["niv", "flan", "t0"]
    assert stats.quota == {"cot": 50, "niv": 0, "flan": 0, "t0": 0}
    assert stats.planned_total == 50 and {r.submix for r in records} == {"cot"}


# ---- shortfall -------------------------------------------------------------------------------------------
def test_shortfall_is_reported_and_fill_shortfall_redistributes_by_the_mix() -> None:
    from tracegen.planning.plan import shortfall_message

    mix = {"cot": 1.0, "niv": 1.0, "flan": 2.0}
    with build_plan(config(n=600, mix=mix)) as plan:
        s = plan.stats
        assert s.quota == {"cot": 150, "niv": 150, "flan": 300, "t0": 0}
        assert s.shortfall["cot"] == 150 - s.eligible["cot"] > 0 and s.planned_total < 600
        message = shortfall_message(s)
        assert (
            message is not None and f"cot had {s.eligible['cot']} eligible rows for a quota of 150" in message
        )
        assert "--fill-shortfall" in message
    with build_plan(config(n=600, mix=mix, fill_shortfall=True)) as plan:
        f = plan.stats
        cot, flan = f.eligible["cot"], f.eligible["flan"]
        # cot and flan are short; niv (1 share, the only one left) takes all that is missing
        assert f.quota == {"cot": cot, "niv": 600 - cot - flan, "flan": flan, "t0": 0}
        assert f.planned == f.quota and f.planned_total == 600 and shortfall_message(f) is None
        assert f.redistributed == {"cot": cot - 150, "niv": 600 - cot - flan - 150, "flan": flan - 300}


def test_fill_shortfall_splits_by_the_remaining_shares() -> None:
    from tracegen.planning.mix import mix_shares
    from tracegen.planning.plan import _submix_quotas

    shares = mix_shares({"cot": 1.0, "niv": 1.0, "flan": 1.0, "t0": 1.0})
    eligible = {"cot": 10, "niv": 1000, "flan": 1000, "t0": 1000}
    assert _submix_quotas(400, shares, eligible, True) == {"cot": 10, "niv": 130, "flan": 130, "t0": 130}
    assert _submix_quotas(400, shares, eligible, False) == {"cot": 100, "niv": 100, "flan": 100, "t0": 100}


def test_the_run_says_what_it_could_not_fill(tmp_path: Path) -> None:
    from tracegen.pipeline import prepare

    lines: list[str] = []
    prepare(config(n=600, mix={"cot": 1.0}, output_dir=str(tmp_path / "run")), on_stage=lines.append)
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert "of --n 600 requests: cot had" in warning and "--fill-shortfall" in warning
    lines.clear()
    prepare(config(n=600, mix={"cot": 1.0}, output_dir=str(tmp_path / "run")), on_stage=lines.append)
    assert any(line.startswith("warning: planned") for line in lines)  # said again on a rerun
