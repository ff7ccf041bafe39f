from __future__ import annotations

import pytest

from tracegen.errors import ConfigError
from tracegen.planning.tokens import (
    count_chat_tokens,
    encoding_for_model,
    get_encoding,
    model_info,
    pricing_for,
)
from tracegen.records import Record


def test_encodings_offline_match_known_ids() -> None:
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]


def test_encoding_per_family() -> None:
    assert encoding_for_model("gpt-4") == "cl100k_base"
    assert encoding_for_model("gpt-3.5-turbo-0125") == "cl100k_base"
    assert encoding_for_model("gpt-4o-2024-08-06") == "o200k_base"
    assert encoding_for_model("gpt-4.1-mini") == "o200k_base"
    assert encoding_for_model("gpt-5") == "o200k_base"


def test_chat_overhead() -> None:
    # 3 priming + per message 3 + role + content tokens
    r = Record(id="cot.0", submix="cot", question="hello world", system_prompt="")
    assert count_chat_tokens(r.messages(), "cl100k_base") == 3 + 3 + 1 + 2


def test_exact_ids_only_never_a_prefix_match() -> None:
    info = model_info("gpt-4o-mini-2024-07-18")
    assert info is not None and info.name == "gpt-4o-mini-2024-07-18"
    assert model_info("openai/gpt-4-0613") is not None  # a provider prefix is not part of the id
    assert model_info("gpt-4o-2099-01-01") is None  # an unlisted snapshot is unknown, not "gpt-4o"
    assert model_info("gpt-4-0613-foo") is None
    assert model_info("llama-3-70b") is None


def test_prices_and_overrides() -> None:
    p = pricing_for("gpt-4")
    assert p.cost_usd(1000, 1000) == pytest.approx(0.03 + 0.06)
    assert pricing_for("gpt-4", batch=True).cost_usd(1000, 1000) == pytest.approx(0.045)
    q = pricing_for("my-llama", input_price=1.0, output_price=2.0)
    assert q.cost_usd(1_000_000, 1_000_000) == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="--input-price"):
        pricing_for("my-llama")
