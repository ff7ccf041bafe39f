"""Orca system messages (verbatim), per-submix draws, multiple-choice detection, template sets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from helpers.flan import REPO
from tracegen.errors import ConfigError
from tracegen.planning.sources import SourceRow
from tracegen.planning.templates import (
    MC_DETECTORS,
    SubmixSystemMessages,
    SystemMessageChooser,
    SystemMessageFile,
    auto_mc_detector,
    get_mc_detector,
    load_submix_system_messages,
    load_system_messages,
    load_template_set,
    options_mc_detector,
    template_mc_detector,
)


def srow(
    question: str = "Q", submix: str = "flan", task: str = "glue/sst2:2.0.0", template: str = "zs_opt"
) -> SourceRow:
    return SourceRow(
        question=question, target="t", submix=submix, task_name=task, template_type=template, where="x:1"
    )


# ---- the 16 messages, verbatim ---------------------------------------------------------------------------
def test_sixteen_messages_and_id_1_is_empty() -> None:
    msgs = load_system_messages()
    assert sorted(msgs) == list(range(1, 17))
    assert msgs[1] == ""


def test_verbatim_quirks_are_kept() -> None:
    msgs = load_system_messages("verbatim")
    assert msgs[2] == (
        "You are an AI assistant. Provide a detailed answer so user don\u2019t need to search outside to "
        "understand the answer."
    )
    assert "don\u2019t" in msgs[6] and "don't" not in msgs[6]
    assert "step-bystep" in msgs[11] and "step-by-step" not in msgs[11]
    assert "step-by-step" in msgs[7] and "step-by-step" in msgs[12]
    for i in (7, 11, 12):
        assert "User will you give you" in msgs[i]
    assert msgs[4].startswith("You are a helpful assistant, who always provide explanation.")
    assert msgs[15] == (
        "Given a definition of a task and a sample input, break the definition into small parts.\n"
        "Each of those parts will have some instruction. Explain their meaning by showing an example that "
        "meets the criteria in the instruction. Use the following format:\n"
        "Part  # : a key part of the definition.\n"
        "Usage: Sample response that meets the criteria from the key part. Explain why you think it meets "
        "the criteria."
    )
    assert msgs[16] == "You are an AI assistant that helps people find information."
    assert msgs[9] == "Explain how you used the definition to come up with the answer."


def test_ascii_spelling_only_replaces_characters() -> None:
    verbatim, ascii_ = load_system_messages("verbatim"), load_system_messages("ascii")
    for i in range(1, 17):
        assert ascii_[i].isascii()
        assert ascii_[i] == verbatim[i].replace("\u2019", "'")
    assert ascii_[2] != verbatim[2] and "step-bystep" in ascii_[11] and "Part  # :" in ascii_[15]


def test_unknown_spelling_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="verbatim or ascii"):
        load_system_messages("fancy")  # type: ignore[arg-type]


def test_submix_lists() -> None:
    lists = load_submix_system_messages()
    assert lists.cot == [6, 11, 16]
    assert lists.niv == [1, 2, 5, 7, 9, 12, 13, 14, 15]
    assert lists.t0 == [1, 2, 3, 5, 7]
    assert lists.flan == [3, 4, 7]
    assert lists.flan_mc == [8, 10]


def test_prompt_files_are_validated_data() -> None:
    data = yaml.safe_load((REPO / "prompts" / "system_messages.yaml").read_text(encoding="utf-8"))
    SystemMessageFile.model_validate(data)
    with pytest.raises(ValidationError):
        SystemMessageFile.model_validate({**data, "extra": 1})
    with pytest.raises(ValidationError):
        SystemMessageFile.model_validate({"messages": data["messages"][:-1]})
    with pytest.raises(ValidationError):
        SubmixSystemMessages.model_validate({"cot": [6], "niv": [1], "t0": [1], "flan": [3], "flan_mc": [17]})


# ---- draws -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("submix", "template", "question", "ids"),
    [
        ("cot", "zs_noopt", "Q", [6, 11, 16]),
        ("niv", "zs_noopt", "Q", [1, 2, 5, 7, 9, 12, 13, 14, 15]),
        ("t0", "zs_opt", "Q\nOPTIONS:\n- a\n- b", [1, 2, 3, 5, 7]),
        ("flan", "zs_noopt", "Q", [3, 4, 7]),
        ("flan", "zs_opt", "Q\nOPTIONS:\n- a\n- b", [8, 10]),
    ],
)
def test_draws_are_uniform_over_the_submix_list(
    submix: str, template: str, question: str, ids: list[int]
) -> None:
    chooser = SystemMessageChooser(seed=7)
    row = srow(question, submix, template=template)
    n = 900 * len(ids)
    counts = Counter(chooser.choose(row, i).system_message_id for i in range(n))
    assert sorted(counts) == ids
    expected = n / len(ids)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 30  # df <= 8: p < 1e-3 would need chi2 > 26 at df 8; generous but catches a skew
    choice = chooser.choose(row, 0)
    assert choice.system_prompt == load_system_messages()[choice.system_message_id or 0]
    assert choice.label == str(choice.system_message_id) and choice.train_system_prompt is None


def test_draws_are_seeded() -> None:
    row = srow(submix="niv")
    a = [SystemMessageChooser(seed=1).choose(row, i).system_message_id for i in range(200)]
    b = [SystemMessageChooser(seed=1).choose(row, i).system_message_id for i in range(200)]
    c = [SystemMessageChooser(seed=2).choose(row, i).system_message_id for i in range(200)]
    assert a == b and a != c


def test_ascii_chooser_sends_ascii() -> None:
    chooser = SystemMessageChooser(seed=0, spelling="ascii")
    prompts = {chooser.choose(srow(submix="niv"), i).system_prompt for i in range(300)}
    assert all(p.isascii() for p in prompts) and len(prompts) == 9


# ---- multiple choice -------------------------------------------------------------------------------------
MC_CASES = [
    # question, template, options, template-detector, auto
    ("Review: good\nIs it positive?\nOPTIONS:\n- negative\n- positive", "zs_opt", True, True, True),
    ("Premise...\n\nChoose your answer from:\n(a). Yes\n(b). No", "zs_opt", False, True, True),
    ("Which is a source of light?\nPick from:\n- the Sun\n- a mirror", "zs_opt", False, True, True),
    ("Text.\nWhat is it about?\nPossible answers:\n[1]. World\n[2]. Sports", "zs_opt", False, True, True),
    ("How do you do this: dry shoes\n\nSelect from the following.\n- a\n- b", "zs_opt", False, True, True),
    ("Write a one-sentence summary of the article.", "zs_opt", False, True, False),
    ("Is this review positive or negative?", "zs_noopt", False, False, False),
    ("Options: a or b?\nOPTIONS:\n- a\n- b", "zs_noopt", True, False, True),
    ("Does it follow?\nOPT:\n a). yes;\n b). no;", "zs_opt", False, True, True),
    ("Is it positive? - yes - no", "zs_opt", False, True, True),
    ("Text.\nOptions are: (i) yes (ii) no", "zs_noopt", False, False, True),
    ("There are many options. Which one?", "zs_opt", False, True, False),
]


@pytest.mark.parametrize(("question", "template", "by_options", "by_template", "by_auto"), MC_CASES)
def test_mc_detectors(
    question: str, template: str, by_options: bool, by_template: bool, by_auto: bool
) -> None:
    row = srow(question, template=template)
    assert options_mc_detector(row) is by_options
    assert template_mc_detector(row) is by_template
    assert auto_mc_detector(row) is by_auto


def test_detector_registry_and_unknown_name() -> None:
    assert set(MC_DETECTORS) == {"auto", "options", "template"}
    assert get_mc_detector("options") is options_mc_detector
    with pytest.raises(ConfigError, match="auto, options, template"):
        get_mc_detector("magic")


def test_mc_only_matters_for_flan_and_detector_is_pluggable() -> None:
    always = SystemMessageChooser(seed=0, mc_detector=lambda row: True)
    never = SystemMessageChooser(seed=0, mc_detector=lambda row: False)
    flan_ids = {always.choose(srow(), i).system_message_id for i in range(100)}
    assert flan_ids == {8, 10}
    assert {never.choose(srow(), i).system_message_id for i in range(100)} == {3, 4, 7}
    assert {always.choose(srow(submix="t0"), i).system_message_id for i in range(200)} == {1, 2, 3, 5, 7}


# ---- template sets ---------------------------------------------------------------------------------------
def write_set(tmp_path: Path, data: object, name: str = "set.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_first_match_wins_and_conditions_combine(tmp_path: Path) -> None:
    ts = load_template_set(
        write_set(
            tmp_path,
            {
                "train_system_prompt": "generic",
                "templates": [
                    {"name": "math", "task": "cot_gsm*", "system_prompt": "step by step"},
                    {
                        "name": "niv-translate",
                        "submix": "niv",
                        "task_regex": "translat",
                        "system_prompt": "translate",
                        "train_system_prompt": "translator",
                    },
                    {"name": "any-cot", "submix": ["cot"], "system_prompt": "cot generic"},
                ],
            },
        )
    )
    chooser = SystemMessageChooser(seed=0, template_set=ts)
    math = chooser.choose(srow(submix="cot", task="cot_gsm8k"), 0)
    assert (math.system_prompt, math.system_message_id, math.train_system_prompt, math.label) == (
        "step by step",
        None,
        "generic",
        "template:math",
    )
    assert chooser.choose(srow(submix="cot", task="cot_esnli"), 0).label == "template:any-cot"
    tr = chooser.choose(srow(submix="niv", task="task530_english_translation"), 0)
    assert (tr.system_prompt, tr.train_system_prompt) == ("translate", "translator")
    # the regex alone is not enough: submix must match too
    other = chooser.choose(srow(submix="flan", task="wmt_translate:1.0.0", template="zs_noopt"), 0)
    assert other.system_message_id in (3, 4, 7) and other.train_system_prompt == "generic"


def test_glob_is_case_sensitive(tmp_path: Path) -> None:
    ts = load_template_set(
        write_set(tmp_path, {"templates": [{"name": "a", "task": "Cot*", "system_prompt": "x"}]})
    )
    assert ts.match(srow(task="cot_gsm8k")) is None
    assert ts.match(srow(task="Cot_gsm8k")) is not None


def test_json_template_set(tmp_path: Path) -> None:
    ts = load_template_set(
        write_set(tmp_path, {"templates": [{"name": "a", "submix": "t0", "system_prompt": ""}]}, "set.json")
    )
    choice = SystemMessageChooser(seed=0, template_set=ts).choose(srow(submix="t0"), 3)
    assert choice.system_prompt == "" and choice.system_message_id is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"templates": [], "colour": "red"}, "unknown key 'colour'"),
        (
            {"templates": [{"name": "a", "task": "x", "system_prompt": "s", "sytem_prompt": "typo"}]},
            "unknown key 'sytem_prompt' in templates[0]",
        ),
        (
            {"templates": [{"name": "a", "system_prompt": "s"}]},
            "needs at least one of task, task_regex, submix",
        ),
        (
            {"templates": [{"name": "a", "task_regex": "(", "system_prompt": "s"}]},
            "not a valid regular expression",
        ),
        ({"templates": [{"name": "a", "submix": "dialog", "system_prompt": "s"}]}, "templates[0].submix"),
        ({"templates": [{"name": "a", "task": "x", "system_prompt": "s"}] * 2}, "repeated: a"),
        ({"templates": [{"name": "a", "task": "x"}]}, "system_prompt"),
    ],
)
def test_bad_template_sets_name_file_and_problem(tmp_path: Path, data: object, expected: str) -> None:
    path = write_set(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_template_set(path)
    message = str(e.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_unreadable_and_non_mapping_template_sets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read template set"):
        load_template_set(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_template_set(tmp_path / "list.yaml")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_template_set(tmp_path / "bad.json")


def test_example_template_set_loads_and_erases_prompts() -> None:
    ts = load_template_set(REPO / "examples" / "templates_orca2.yaml")
    assert ts.train_system_prompt and len(ts.templates) >= 4
    rule = ts.match(srow(submix="flan", task="trivia_qa/rc:1.1.0"))
    assert rule is not None and rule.name == "recall-then-answer" and rule.train_system_prompt
