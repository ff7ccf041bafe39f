"""Quality filters: each keeps good records, rejects bad ones with its reason; the runner counts drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracegen.cleaning.filters import (
    AnswerDisagreesFilter,
    AsksQuestionFilter,
    EmptyFilter,
    FilterConfig,
    FilterPipeline,
    NotEnoughInformationFilter,
    PhraseMatcher,
    RefusalFilter,
    TruncatedFilter,
    build_filters,
    load_refusals,
)
from tracegen.errors import ConfigError
from tracegen.records import Record

GOOD = "Paris is the capital of France. It has been the capital since the 10th century."


def rec(response: str | None = GOOD, **kw: object) -> Record:
    base: dict[str, object] = {
        "id": "flan.1",
        "submix": "flan",
        "question": "What is the capital of France?",
        "system_prompt": "You are an AI assistant.",
        "response": response,
        "finish_reason": "stop",
    }
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


# ---- empty / too short -------------------------------------------------------------------------------------
@pytest.mark.parametrize("response", [None, "", "   \n\t "])
def test_empty_rejected_always(response: str | None) -> None:
    f = EmptyFilter()
    verdict = f.check(rec(response, system_prompt=""))
    assert verdict is not None and verdict.reason == "empty"


def test_too_short_only_with_system_message_by_default() -> None:
    f = EmptyFilter()
    short = rec("Paris.")  # 6 chars
    verdict = f.check(short)
    assert verdict is not None and verdict.reason == "too_short" and "6 < 10" in verdict.detail
    assert f.check(rec("Paris.", system_prompt="")) is None  # OpenOrca: no system message, no length rule
    assert f.check(rec("Paris, yes")) is None  # exactly 10 characters is kept
    everywhere = EmptyFilter(only_with_system=False)
    assert everywhere.check(rec("Paris.", system_prompt="")) is not None


def test_too_short_threshold_configurable_and_switchable() -> None:
    assert EmptyFilter(min_chars=3).check(rec("Paris.")) is None
    assert EmptyFilter(too_short=False).check(rec("No")) is None
    assert EmptyFilter(empty=False).check(rec("")) is None


# ---- truncated ---------------------------------------------------------------------------------------------
def test_truncated() -> None:
    f = TruncatedFilter()
    verdict = f.check(rec(finish_reason="length", completion_tokens=1024))
    assert verdict is not None and verdict.reason == "truncated" and "1024" in verdict.detail
    assert f.check(rec(finish_reason="stop")) is None
    assert f.check(rec(finish_reason=None)) is None


# ---- refusal list ------------------------------------------------------------------------------------------
def test_refusal_list_loads_and_is_validated() -> None:
    rl = load_refusals()
    phrases = rl.phrases()
    assert len(phrases) >= 90
    texts = [p.lower() for _, p in phrases]
    for must in ("as an ai language model", "i'm sorry, i cannot", "my knowledge cutoff", "september 2021"):
        assert must in texts
    assert "i apologize, but" in texts
    assert set(rl.groups) >= {"ai_identity", "knowledge_cutoff", "refusal"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schema_version: 1\ngroups: {a: [hello there]}\nextra_key: 1\n", "extra"),
        ("schema_version: 2\ngroups: {a: [hello there]}\n", "schema_version"),
        ("schema_version: 1\ngroups: {a: [hello there], b: [Hello  There]}\n", "listed twice"),
        ("schema_version: 1\ngroups: {a: ['x']}\n", "shorter than 3"),
        ("schema_version: 1\ngroups: {a: []}\n", "empty"),
        ("schema_version: [1\n", "not valid YAML"),
    ],
)
def test_refusal_list_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as e:
        load_refusals(path)
    assert str(path) in str(e.value)


def test_refusal_list_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_refusals(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "response",
    [
        "As an AI language model, I cannot have opinions.",
        "AS AN AI LANGUAGE MODEL I think so",
        "as an   AI\nlanguage model, well",
        "I’m sorry, I can’t help with that.",  # curly apostrophes
        "I apologize, but I do not know.",
        "My knowledge cutoff is in 2021.",
        "Events after September 2021 are unknown to me.",
        "Unfortunately, as an AI I have no body.",
    ],
)
def test_refusal_rejected(response: str) -> None:
    f = RefusalFilter.from_file()
    verdict = f.check(rec(response))
    assert verdict is not None and verdict.reason == "refusal"
    assert ":" in verdict.detail  # "group: 'phrase'"


@pytest.mark.parametrize(
    "response",
    [
        GOOD,
        "Google has an AI language model called Gemini.",  # 'has an', not 'as an'
        "The Apologize Tour was a concert series.",
        "Machine learning models learn from training data.",
    ],
)
def test_refusal_kept(response: str) -> None:
    assert RefusalFilter.from_file().check(rec(response)) is None


def test_refusal_extra_phrases_and_custom_file(tmp_path: Path) -> None:
    f = RefusalFilter.from_file(extra=["bananas are forbidden"])
    verdict = f.check(rec("Sorry: BANANAS are  forbidden here."))
    assert verdict is not None and "extra" in verdict.detail
    path = tmp_path / "mine.yaml"
    path.write_text("schema_version: 1\ngroups:\n  mine: [purple monkey]\n", encoding="utf-8")
    mine = RefusalFilter.from_file(path)
    assert mine.check(rec("A purple monkey dishwasher.")) is not None
    assert mine.check(rec("As an AI language model, hi.")) is None  # only the custom list


def test_phrase_matcher_word_boundaries() -> None:
    m = PhraseMatcher([("g", "cat nap"), ("g", "(beta)")])
    assert m.search("a Cat  nap today") == ("g", "cat nap")
    assert m.search("concat napkin") is None
    assert m.search("version (beta)2") == ("g", "(beta)")  # non-alphanumeric edges need no boundary


# ---- not enough information --------------------------------------------------------------------------------
def test_not_enough_information() -> None:
    f = NotEnoughInformationFilter()
    verdict = f.check(rec("There is Not Enough Information to answer."))
    assert verdict is not None and verdict.reason == "not_enough_information"
    assert f.check(rec(GOOD)) is None
    # OpenOrca drops it even when FLAN's target says so; the switch keeps those rows.
    row = rec("Not enough information.", target="Not enough information")
    assert f.check(row) is not None
    assert NotEnoughInformationFilter(unless_target=True).check(row) is None


# ---- asks a question ---------------------------------------------------------------------------------------
def test_asks_question_rule() -> None:
    f = AsksQuestionFilter()
    asks = rec("Here is a summary of the text. Would you like more details?", question="Summarize: foo bar.")
    verdict = f.check(asks)
    assert verdict is not None and verdict.reason == "asks_question"
    # Prompt contains "question" or "?": kept (it may ask for a question, or be a question to translate).
    assert f.check(rec("What is it?", question="Generate a question about: cats.")) is None
    assert f.check(rec("Comment allez-vous ?", question="Translate: How are you?")) is None
    # Does not end in "?" (trailing whitespace ignored): kept.
    assert f.check(rec("Is it? It is.  \n", question="Summarize: foo")) is None
    assert f.check(rec("Would you like more? \n", question="Summarize: foo")) is not None
    # OpenOrca's exact rule: only "question" exempts.
    strict = AsksQuestionFilter(exempt_markers=["question"])
    assert strict.check(rec("Comment allez-vous ?", question="Translate: How are you?")) is not None


# ---- answer disagreement -----------------------------------------------------------------------------------
def test_answer_disagrees() -> None:
    f = AnswerDisagreesFilter()
    verdict = f.check(rec(agrees_with_target=False, target="yes"))
    assert verdict is not None and verdict.reason == "answer_disagrees"
    assert f.check(rec(agrees_with_target=True)) is None
    assert f.check(rec(agrees_with_target=None)) is None


# ---- config and runner -------------------------------------------------------------------------------------
def test_config_defaults_and_forbids_unknown_keys() -> None:
    cfg = FilterConfig()
    assert cfg.min_response_chars == 10 and cfg.min_chars_only_with_system
    assert cfg.refusal and cfg.truncated and cfg.not_enough_information and cfg.asks_question
    assert not cfg.answer_disagrees  # off by default
    names = [f.name for f in build_filters(cfg)]
    assert names == ["empty", "truncated", "refusal", "not_enough_information", "asks_question"]
    with pytest.raises(ValueError, match="extra"):
        FilterConfig.model_validate({"refusals": False})
    off = FilterConfig(refusal=False, asks_question=False, answer_disagrees=True)
    assert [f.name for f in build_filters(off)] == [
        "empty",
        "truncated",
        "not_enough_information",
        "answer_disagrees",
    ]


def test_pipeline_yields_kept_counts_and_reports_rejects() -> None:
    records = [
        rec(GOOD, id="flan.1"),
        rec("", id="flan.2"),
        rec(GOOD, id="flan.3", finish_reason="length"),
        rec("As an AI language model, I can't.", id="flan.4"),
        rec("ok", id="flan.5"),
        rec("There is not enough information.", id="flan.6"),
        rec("Do you want to know more about it?", id="flan.7", question="Tell me about Paris."),
        rec(GOOD, id="flan.8"),
    ]
    pipe = FilterPipeline(build_filters())
    rejected: list[tuple[str, str, str]] = []
    kept = list(
        pipe.run(records, on_reject=lambda r, stage, reason, detail: rejected.append((r.id, stage, reason)))
    )
    assert [r.id for r in kept] == ["flan.1", "flan.8"]
    assert rejected == [
        ("flan.2", "filter", "empty"),
        ("flan.3", "filter", "truncated"),
        ("flan.4", "filter", "refusal"),
        ("flan.5", "filter", "too_short"),
        ("flan.6", "filter", "not_enough_information"),
        ("flan.7", "filter", "asks_question"),
    ]
    assert dict(pipe.counts) == {
        "empty": 1,
        "truncated": 1,
        "refusal": 1,
        "too_short": 1,
        "not_enough_information": 1,
        "asks_question": 1,
    }
    assert pipe.seen == 8 and pipe.kept == 2


def test_first_filter_wins_each_drop_counted_once() -> None:
    pipe = FilterPipeline(build_filters())
    truncated_refusal = rec("As an AI language model", finish_reason="length")
    assert list(pipe.run([truncated_refusal])) == []
    assert dict(pipe.counts) == {"truncated": 1}
