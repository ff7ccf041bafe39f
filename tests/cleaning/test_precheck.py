"""Clean work done during generation (cleaning/precheck.py): same files, fewer checks at the end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from helpers.clean import basic_run
from tracegen import pipeline
from tracegen.cleaning.dedup import DedupConfig, Deduper
from tracegen.cleaning.filters import FilterConfig, Rejection
from tracegen.cleaning.postprocess import clean
from tracegen.cleaning.precheck import Prechecker, line_key
from tracegen.config import RunConfig
from tracegen.engine import generate
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer

OUTPUTS = ("clean.jsonl", "rejected.jsonl", "clean_stats.json", "dedup_state.npz")


def _lines(run: Path) -> list[bytes]:
    return (run / "traces.jsonl").read_bytes().splitlines(keepends=True)


def _outputs(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in OUTPUTS}


async def _prechecked(lines: list[bytes], dedup: DedupConfig | None = None) -> Prechecker:
    pre = Prechecker(FilterConfig(), dedup)
    async with pre.running():
        pre.feed(lines[: len(lines) // 2])
        pre.feed(lines[len(lines) // 2 :])
        while len(pre) < len(lines):
            await asyncio.sleep(0.01)
    return pre


@pytest.mark.parametrize(
    "dedup",
    [None, DedupConfig(), DedupConfig(near_question=True, exact_question=True, question_min_words=3)],
    ids=["verdicts-only", "default-dedup", "every-dedup-kind"],
)
def test_clean_with_prechecked_verdicts_writes_the_same_files(
    tmp_path: Path, dedup: DedupConfig | None
) -> None:
    run = basic_run(tmp_path)
    clean(run, dedup_config=dedup)
    without = _outputs(run)
    pre = asyncio.run(_prechecked(_lines(run), dedup))
    assert len(pre) == len(_lines(run))
    result = clean(run, dedup_config=dedup, prechecked=pre)
    assert _outputs(run) == without
    assert result.rejected_by_filter and result.removed_by_dedup


def test_dedup_takes_keys_computed_earlier_and_computes_the_missing_ones(tmp_path: Path) -> None:
    run = basic_run(tmp_path)
    records = [Record.from_dict(json.loads(line)) for line in _lines(run)]
    deduper = Deduper(DedupConfig(near_question=True))
    packed = deduper.packed_keys(records)
    # planted: record 1 given record 0's keys is a duplicate of it, so the given keys are really used
    known = {id(records[1]): packed[0], id(records[2]): packed[2]}
    kept = list(Deduper(DedupConfig(near_question=True)).run(records, known=lambda r: known.get(id(r))))
    assert records[0] in kept and records[1] not in kept and records[2] in kept
    plain = list(Deduper(DedupConfig(near_question=True)).run(records))
    assert records[1] in plain


def test_clean_uses_the_verdicts_only_when_they_were_computed_with_its_settings(tmp_path: Path) -> None:
    run = basic_run(tmp_path)
    first = _lines(run)[0]
    record = Record.from_dict(json.loads(first))
    pre = Prechecker(FilterConfig())
    # a planted verdict: clean takes it for that exact line (so it is really consulted) ...
    pre._verdicts[line_key(first)] = (None, Rejection("planted", "a verdict computed earlier"), None)
    assert clean(run, prechecked=pre).rejected_by_filter.get("planted") == 1
    assert record.id in (run / "rejected.jsonl").read_text()
    # ... but not when the settings differ (another filter config) or the answer check is off
    other = FilterConfig(refusal=False)
    assert not pre.serves(other, True) and not pre.serves(FilterConfig(), False)
    assert "planted" not in clean(run, other, prechecked=pre).rejected_by_filter
    assert "planted" not in clean(run, answer_check=False, prechecked=pre).rejected_by_filter


def test_the_prechecker_keeps_at_most_max_entries_and_skips_unreadable_lines(tmp_path: Path) -> None:
    lines = _lines(basic_run(tmp_path))
    pre = Prechecker(FilterConfig(), max_entries=5)
    for line in lines:
        pre.feed([line])
    assert len(pre._queue) == 5  # past the cap, lines are left to clean
    pre.check_lines([b'{"id": "torn'])
    assert len(pre) == 0


async def test_generate_tells_the_observer_every_durable_traces_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    seen: list[bytes] = []
    records = [
        Record(id=f"r{i}", submix="flan", question=f"What is {i} + {i}?", system_prompt="", target=str(2 * i))
        for i in range(40)
    ]
    with FakeServer(FakeOptions(api_key="sk-test")) as srv:
        result = await generate(
            records, RunConfig(base_url=srv.base_url, concurrency=8), tmp_path, on_traces=seen.extend
        )
    assert result.succeeded == 40
    assert b"".join(sorted(seen)) == b"".join(sorted(_lines(tmp_path)))


async def test_a_failing_observer_never_breaks_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def broken(lines: list[bytes]) -> None:
        raise RuntimeError("observer bug")

    records = [Record(id=f"r{i}", submix="flan", question=f"Q{i}?", system_prompt="") for i in range(20)]
    with FakeServer(FakeOptions(api_key="sk-test")) as srv:
        result = await generate(records, RunConfig(base_url=srv.base_url), tmp_path, on_traces=broken)
    assert result.succeeded == 20 and len(_lines(tmp_path)) == 20


def test_a_run_prechecks_its_answers_and_exports_what_a_plain_clean_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[bool] = []
    verdict = Prechecker.verdict

    def counting(self: Prechecker, line: bytes) -> object:
        found = verdict(self, line)
        served.append(found is not None)
        return found

    monkeypatch.setattr(Prechecker, "verdict", counting)
    run = tmp_path / "run"
    sample = str(Path(__file__).resolve().parents[2] / "examples" / "flan_sample")
    with FakeServer(FakeOptions(latency_mean_s=0.05)) as srv:  # answers awaited: time to precheck them
        config = RunConfig(source=[sample], n=24, output_dir=run, base_url=srv.base_url, budget_usd=1.0)
        pipeline.run(config)
    assert len(served) == len(_lines(run)) and any(served)  # clean asked, and found verdicts
    after_run = _outputs(run)
    monkeypatch.setattr(Prechecker, "verdict", verdict)
    clean(run, config.filters, config.dedup_config())  # from scratch, nothing precomputed
    assert _outputs(run) == after_run
