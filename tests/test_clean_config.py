"""``filters:`` and ``dedup:`` are typed sub-models of RunConfig: validated at load with messages naming the
key, stored in the manifest as the keys the user set, read back with "not set" intact."""

from __future__ import annotations

import pytest

from tracegen import DedupConfig, FilterConfig
from tracegen.config import RunConfig, load_config
from tracegen.errors import ConfigError


def test_sub_models_are_typed_and_reject_unknown_keys() -> None:
    config = RunConfig(filters={"min_response_chars": 5}, dedup={"near_response": False})
    assert isinstance(config.filters, FilterConfig) and config.filters.min_response_chars == 5
    assert isinstance(config.dedup, DedupConfig) and config.dedup.near_response is False
    with pytest.raises(ConfigError, match=r"flag --filters: unknown key 'min_chars'; known keys: empty, "):
        load_config(None, {"filters": {"min_chars": 5}})
    with pytest.raises(
        ConfigError, match=r"flag --dedup: num_perm: Input should be greater than or equal to 8"
    ):
        load_config(None, {"dedup": {"num_perm": 1}})


@pytest.mark.parametrize(("plan_dedup", "given", "expected"), [(False, {}, False), (True, {}, True),
                                                                 (False, {"exact_question": True}, True)])  # fmt: skip
def test_exact_question_follows_the_plan_unless_set_also_after_a_manifest_round_trip(
    plan_dedup: bool, given: dict[str, bool], expected: bool
) -> None:
    config = RunConfig(plan_dedup_questions=plan_dedup, dedup=given)
    stored = config.public_dict()
    assert stored["dedup"] == given and stored["filters"] == {}  # the keys set, as before they were typed
    again = RunConfig.model_validate(stored)
    assert config.dedup_config().exact_question is expected
    assert again.dedup_config().exact_question is expected
