"""``--format messages``: TRL's conversational format, exported, documented in the card, pushed and loaded back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import jinja2
import pytest
from typer.testing import CliRunner

from helpers.export import make_records, make_run_dir
from helpers.hub import TOKEN, fake_hub, load_from_hub, local_rows
from tracegen.cli import app
from tracegen.publish.card import split_card
from tracegen.publish.export import export
from tracegen.publish.hub import push
from tracegen.testing.fake_hub import FakeHub

# A ChatML template as chat models ship it (tokenizer_config.json "chat_template"); transformers renders
# it with jinja2 exactly like this.
CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def is_conversational(example: dict[str, Any]) -> bool:
    """TRL's ``trl.data_utils.is_conversational`` for the ``messages`` key (TRL is not a dependency)."""
    maybe = example.get("messages")
    return (
        isinstance(maybe, list)
        and isinstance(maybe[0], dict)
        and "role" in maybe[0]
        and "content" in maybe[0]
    )


def test_messages_rows_follow_the_records_and_render_with_a_chat_template(tmp_path: Path) -> None:
    records = make_records(24, erase_every=5)
    records[3].system_prompt = ""  # Orca message 1: no system turn
    records[3].train_system_prompt = None
    run = make_run_dir(tmp_path / "run", records)
    export(run, formats=["messages", "openorca"])
    ds = datasets.load_dataset(str(run / "dataset"), "messages", split="train")
    assert list(ds.features) == ["messages"]
    openorca = datasets.load_dataset(str(run / "dataset"), "openorca", split="train")
    template = jinja2.Environment().from_string(CHATML)
    for row, oo in zip(ds, openorca, strict=True):
        assert is_conversational(row)
        turns = row["messages"]
        roles = [t["role"] for t in turns]
        if oo["system_prompt"]:
            assert roles == ["system", "user", "assistant"]
            assert turns[0]["content"] == oo["system_prompt"]  # the training system message (prompt erasure)
        else:
            assert roles == ["user", "assistant"]
        assert turns[-2]["content"] == oo["question"] and turns[-1]["content"] == oo["response"]
        rendered = template.render(messages=turns)
        assert rendered.endswith(f"<|im_start|>assistant\n{oo['response']}<|im_end|>\n")
    assert [t["role"] for t in ds[3]["messages"]] == ["user", "assistant"]


def test_card_shows_how_to_train_on_it(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_records(6))
    export(run, formats=["openorca", "messages"])
    _, body = split_card((run / "dataset" / "README.md").read_text())
    assert "from trl import SFTConfig, SFTTrainer" in body
    assert 'load_dataset("<user>/<dataset>", "messages", split="train")' in body
    assert "`messages`" in body
    export(run, formats=["openorca"])
    _, body = split_card((run / "dataset" / "README.md").read_text())
    assert "SFTTrainer" not in body


def test_cli_export_format_messages(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_records(5))
    result = CliRunner().invoke(app, ["export", str(run), "--format", "messages"])
    assert result.exit_code == 0, result.output
    assert (run / "dataset" / "messages" / "train.jsonl").exists()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running fake Hub, HF_ENDPOINT pointing at it, online, no token saved anywhere."""
    with fake_hub(monkeypatch, tmp_path) as fake:
        yield fake


def test_push_the_messages_config_and_load_it_from_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_records(9))
    export(run, formats=["openorca", "messages"])
    result = push(run, "tester/orca-chat", config_name="messages", token=TOKEN)
    assert result.configs == ("messages",)
    _, body = split_card(hub.files("tester/orca-chat")["README.md"].decode())
    assert 'load_dataset("tester/orca-chat", "messages", split="train")' in body
    loaded = load_from_hub(hub.endpoint, "tester/orca-chat", ["messages"], tmp_path, TOKEN)
    assert isinstance(loaded, dict), loaded
    assert loaded["messages"] == local_rows(run / "dataset", "messages")

    bare = make_run_dir(tmp_path / "bare", make_records(3))
    export(bare, formats=["openorca"])
    with pytest.raises(Exception, match="--format messages"):
        push(bare, "tester/orca-chat", config_name="messages", token=TOKEN)
