"""The dataset card: valid Hub metadata, the tables a user needs, and no secrets anywhere in the export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from helpers.export import ORCA_MESSAGES, make_records, make_run_dir
from tracegen.errors import ConfigError
from tracegen.publish.card import (
    BASE_TAGS,
    BEGIN,
    END,
    CardOptions,
    merge_card,
    render_card,
    scrub_secrets,
    size_category,
    split_card,
    validate_card,
)
from tracegen.publish.export import export
from tracegen.testing.fake_hub import FakeHub, check_card_metadata


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    records = make_records(40, seed=11, erase_every=5)
    run = make_run_dir(tmp_path / "run", records)
    export(run, formats=["openorca", "full", "sharegpt"])
    return run / "dataset"


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1000, "1K<n<10K"),
        (99_999, "10K<n<100K"),
        (100_000, "100K<n<1M"),
        (1_000_000, "1M<n<10M"),
        (5_000_000, "1M<n<10M"),
        (10**13, "n>1T"),
    ],
)
def test_size_category_uses_the_hub_buckets(rows: int, bucket: str) -> None:
    assert size_category(rows) == bucket


def test_card_metadata_is_valid_for_huggingface_hub_and_datasets(exported: Path) -> None:
    content = (exported / "README.md").read_text("utf-8")
    meta = validate_card(content, root=exported)  # hub + datasets parsers, license, buckets, data files exist
    data = DatasetCard(content).data
    assert isinstance(data, DatasetCardData)
    assert data.license == "other"
    assert data.language == ["en"]
    assert data.size_categories == ["n<1K"]
    assert {"text-generation", "question-answering"} <= set(data.task_categories or [])
    assert set(BASE_TAGS) <= set(meta["tags"]) and {"synthetic", "orca", "tracegen", "distillation"} <= set(
        meta["tags"]
    )
    assert isinstance(meta["pretty_name"], str) and meta["pretty_name"]
    assert [c["config_name"] for c in meta["configs"]] == ["openorca", "full", "sharegpt"]
    assert meta["configs"][0]["default"] is True
    assert meta["configs"][1]["data_files"] == [{"split": "train", "path": "full/data/train-*.parquet"}]
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    assert infos["full"]["splits"][0]["num_examples"] == 40
    assert {"name": "agrees_with_target", "dtype": "bool"} in infos["full"]["features"]
    errors, _ = check_card_metadata(content, "dataset")  # the fake Hub's server-side rules agree
    assert errors == []


def test_card_body_holds_the_generation_config_and_the_tables(exported: Path) -> None:
    _, body = split_card((exported / "README.md").read_text("utf-8"))
    manifest = json.loads((exported / "export.json").read_text("utf-8"))
    tally = manifest["tally"]
    # generation config: teachers as requested and as returned, sampling parameters, seed, source, mix
    assert "| gpt-4o-mini | tracegen-fake:gpt-4o-mini | 40 |" in body
    for row in (
        "| temperature | 0.7 |",
        "| top_p | 0.95 |",
        "| max_tokens | 1,024 |",
        "| seed | 7 |",
        "| mix | orca |",
        "| source | flan_sample |",
        "| tracegen version | 0.1.0 |",
    ):
        assert row in body
    assert "/home/someone" not in body  # local paths are shown by name only
    # rows per submix and per system message (with the text; newlines shown as ⏎)
    for submix, n in tally["by_submix"].items():
        assert f"| {submix} | {n} |" in body
    assert ORCA_MESSAGES[15].replace("\n", "⏎") in body
    assert "(empty: no system message)" in body
    assert "Prompt erasure" in body and "| You are a helpful assistant. | 8 |" in body
    # tokens and dollars, filter and dedup counts, answer-check agreement
    assert f"| prompt tokens (exported rows) | {tally['prompt_tokens']:,} |" in body
    assert "| cost_usd | $0.0123 |" in body
    assert "| refusal | 2 |" in body and "| exact_question | 3 |" in body
    check = tally["answer_check"]
    assert f"| agrees | {check['agrees']} |" in body and f"| unknown | {check['unknown']} |" in body
    # how to load it, citation
    assert 'load_dataset("<user>/<dataset>", "openorca", split="train")' in body
    assert "2306.02707" in body and "mukherjee2023orca" in body
    assert "## License and terms" in body


def test_render_with_repo_id_subset_and_kept_remote_configs(exported: Path) -> None:
    manifest = json.loads((exported / "export.json").read_text("utf-8"))
    kept = [{"config_name": "gpt35", "data_files": "gpt35/*.parquet", "default": True}]
    content = render_card(manifest, repo_id="me/orca", only=["full"], keep_configs=kept)
    meta, body = split_card(content)
    assert [c["config_name"] for c in meta["configs"]] == ["full", "gpt35"]
    assert meta["configs"][1]["default"] is True and "default" not in meta["configs"][0]
    assert 'load_dataset("me/orca", "full", split="train")' in body
    validate_card(content)
    content = render_card(manifest, repo_id="me/orca", only=["openorca"], keep_configs=kept)
    meta, _ = split_card(content)
    assert meta["configs"][0]["default"] is True and "default" not in meta["configs"][1]


def test_license_and_names_are_configurable_and_checked(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_records(5))
    options = CardOptions(license="mit", pretty_name="My Orca", extra_tags=("gpt-4o-mini",))
    export(run, card=options)
    meta, body = split_card((run / "dataset" / "README.md").read_text("utf-8"))
    assert meta["license"] == "mit" and meta["pretty_name"] == "My Orca" and "gpt-4o-mini" in meta["tags"]
    assert body.startswith(f"\n{BEGIN}\n\n# My Orca") and body.endswith(f"{END}\n")
    with pytest.raises(ConfigError, match="not a Hub license id"):
        export(run, card=CardOptions(license="MIT License"))
    with pytest.raises(ConfigError, match="ISO 639"):
        export(run, card=CardOptions(language=("English",)))


def test_validate_card_rejects_what_the_hub_rejects(exported: Path) -> None:
    content = (exported / "README.md").read_text("utf-8")
    for bad, message in [
        (content.replace("license: other", "license: MIT-ish"), "license 'MIT-ish'"),
        (content.replace("- n<1K", "- lots"), "size_categories 'lots'"),
        (content.replace("path: full/data/train-*.parquet", "path: nowhere/*.parquet"), "no file matches"),
        (content.replace("license: other", "license: [other"), "YAML is invalid"),
        ("no metadata here", "no YAML metadata"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("*", r"\*")):
            validate_card(bad, root=exported)


def test_fake_hub_validate_yaml_rules() -> None:
    ok = "---\nlicense: mit\nlanguage: [en]\nconfigs:\n- config_name: a\n  data_files: a/*.parquet\n---\nbody"
    assert check_card_metadata(ok) == ([], [])
    assert check_card_metadata("just text") == ([], ["empty or missing yaml metadata in repo card"])
    cases = {
        "---\nlicense: [mit\n---\n": "Invalid YAML",
        "---\nlicense: WTF\n---\n": '"license" must be one of',
        "---\ntags: 3\n---\n": '"tags" must be an array',
        "---\nsize_categories: [huge]\n---\n": '"size_categories" must be one of',
        "---\nconfigs:\n- data_files: x\n---\n": 'config_name" is required',
        "---\nconfigs:\n- config_name: a\n  data_files: [{split: train}]\n---\n": 'data_files" items',
        "---\ndataset_info:\n  splits: [{name: train, num_examples: many}]\n---\n": "must be integers",
        "---\npretty_name: [a]\n---\n": '"pretty_name" must be a string',
    }
    for content, message in cases.items():
        errors, _ = check_card_metadata(content)
        assert any(message in e for e in errors), (content, errors)
    _, warnings = check_card_metadata("---\ntask_categories: [mind-reading]\n---\n")
    assert warnings and "mind-reading" in warnings[0]


@pytest.fixture
def hub_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fake Hub that huggingface_hub's module-level ENDPOINT points at (RepoCard.validate reads it)."""
    with FakeHub() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield hub.endpoint


def test_card_validate_passes_against_the_hub_validate_endpoint(exported: Path, hub_endpoint: str) -> None:
    card = DatasetCard((exported / "README.md").read_text("utf-8"))
    card.validate()  # POST /api/validate-yaml on the fake Hub
    card.data.license = "not-a-license"
    card.data.size_categories = ["zillions"]
    with pytest.raises(ValueError, match="license"):
        DatasetCard(str(card)).validate()


def test_scrub_secrets_removes_keys_tokens_and_url_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-0123456789abcdef")
    monkeypatch.setenv("MY_GATEWAY_TOKEN", "gw-planted-secret-value")
    data = {
        "api_key": "whatever",
        "hf_token": "abc",
        "max_tokens": 1024,
        "prompt_tokens": 5,
        "headers": {"Authorization": "Bearer abcdefghijklmnop"},
        "base_url": "https://user:pw@gateway.example/v1?api-key=zzz",
        "note": "used sk-planted-0123456789abcdef and gw-planted-secret-value",
        "list": ["hf_abcdefghijklmnopqrstuv"],
    }
    clean = scrub_secrets(data)
    text = json.dumps(clean)
    for secret in (
        "whatever",
        'abc"',
        "abcdefghijklmnop",
        "user:pw",
        "zzz",
        "sk-planted",
        "gw-planted",
        "hf_abcd",
    ):
        assert secret not in text
    assert clean["max_tokens"] == 1024 and clean["prompt_tokens"] == 5
    assert clean["base_url"] == "https://gateway.example/v1"


def test_no_secret_reaches_the_export_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "OPENAI_API_KEY": "sk-proj-PLANTEDopenaiKEY1234567890",
        "HF_TOKEN": "hf_PLANTEDhubTOKENabcdefghijklmn",
        "AZURE_OPENAI_API_KEY": "azPLANTEDazureKEY0987654321",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    config = {
        "base_url": "https://admin:PLANTEDpassword@llm.example.com/v1?key=PLANTEDquerykey",
        "api_key": "PLANTEDconfigApiKey",
        "extra_headers": {"Authorization": "Bearer PLANTEDbearer123456"},
        "filters": {"refusal": True, "note": "key sk-proj-PLANTEDopenaiKEY1234567890"},
    }
    stats = {"hf_token": "hf_PLANTEDhubTOKENabcdefghijklmn", "last_error": "401 for key PLANTEDconfigApiKey"}
    run = make_run_dir(tmp_path / "run", make_records(10), config=config, stats=stats)
    # the secret values also appear literally in run files that are copied (manifest, stats)
    assert "PLANTED" in (run / "manifest.json").read_text() and "PLANTED" in (run / "stats.json").read_text()
    export(run, formats=["openorca", "full", "alpaca", "sharegpt"])
    planted = [
        *secrets.values(),
        "PLANTEDpassword",
        "PLANTEDquerykey",
        "PLANTEDconfigApiKey",
        "PLANTEDbearer",
    ]
    for path in (run / "dataset").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for s in planted:
                assert s.encode() not in data, f"{s} leaked into {path}"
            assert b"PLANTED" not in data, path
    manifest = yaml.safe_load((run / "dataset" / "tracegen" / "manifest.json").read_text())
    assert manifest["config"]["base_url"] == "https://llm.example.com/v1"


def test_merge_card_keeps_what_people_added_on_the_hub(exported: Path) -> None:
    manifest = json.loads((exported / "export.json").read_text("utf-8"))
    ours = render_card(manifest, repo_id="me/orca")
    meta, body = split_card(ours)
    edited_meta = dict(
        meta,
        license="mit",
        tags=["my-tag", "orca"],
        extra_gated_prompt="Be nice.",
        size_categories=["n>1T"],
        pretty_name="Hand-named",
    )
    remote = (
        "---\n"
        + yaml.safe_dump(edited_meta, sort_keys=False)
        + "---\n\nA note written on the Hub.\n\n"
        + body.strip("\n").replace("## Citation", "## Citation (edited inside: replaced)")
        + "\n\nFooter kept.\n"
    )
    merged = merge_card(remote, ours, CardOptions())
    merged_meta, merged_body = split_card(merged)
    assert (
        merged_meta["license"] == "mit" and merged_meta["pretty_name"] == "Hand-named"
    )  # kept: not explicit
    assert merged_meta["extra_gated_prompt"] == "Be nice."
    assert merged_meta["tags"][:2] == ["my-tag", "orca"] and "tracegen" in merged_meta["tags"]
    assert merged_meta["size_categories"] == ["n<1K"]  # ours
    assert merged_body.lstrip().startswith("A note written on the Hub.") and merged_body.rstrip().endswith(
        "Footer kept."
    )
    assert "(edited inside: replaced)" not in merged_body and merged_body.count(BEGIN) == 1
    validate_card(merged)
    explicit = merge_card(
        remote, render_card(dict(manifest, card={"license": "cc-by-4.0"})), CardOptions(license="cc-by-4.0")
    )
    assert split_card(explicit)[0]["license"] == "cc-by-4.0"  # an explicit choice at export wins
    handwritten = merge_card("---\nlicense: mit\n---\n# My own card\n", ours, CardOptions())
    assert split_card(handwritten)[1].lstrip().startswith("# My own card\n\n" + BEGIN)
