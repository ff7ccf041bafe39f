"""Push to the Hub, end to end against the Hub-protocol fake server (no mocked methods)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from helpers.export import make_records, make_run_dir
from helpers.hub import TOKEN, fake_hub, load_from_hub, local_rows
from tracegen.errors import HubError, RunDirError
from tracegen.publish.card import split_card
from tracegen.publish.export import export
from tracegen.publish.hub import NO_TOKEN, push
from tracegen.testing.fake_hub import FakeHub


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running fake Hub, HF_ENDPOINT pointing at it, online, no token saved anywhere."""
    with fake_hub(monkeypatch, tmp_path, orgs=("tracegen-org",)) as fake:
        yield fake


def run_with_export(root: Path, n: int = 30, *, shard_rows: int = 12, seed: int = 0) -> Path:
    run = make_run_dir(root, make_records(n, seed=seed, erase_every=4))
    export(run, formats=["openorca", "full", "sharegpt"], shard_rows=shard_rows)
    return run


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_push_then_push_again_updates_in_place_and_loads_back(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = run_with_export(tmp_path / "run", 30, shard_rows=12)  # 3 shards per config
    first = push(run, "tester/orca")
    assert first.repo_id == "tester/orca" and first.private and hub.is_private("tester/orca")
    assert first.configs == ("openorca", "full", "sharegpt") and first.rows == 30
    assert first.url == f"{hub.endpoint}/datasets/tester/orca"
    files = hub.files("tester/orca")
    assert "openorca/data/train-00002-of-00003.parquet" in files
    assert {"tracegen/manifest.json", "tracegen/stats.json", "tracegen/clean_stats.json"} <= set(files)
    assert not any(p.endswith(".jsonl") for p in files)
    meta, body = split_card(files["README.md"].decode())
    assert 'load_dataset("tester/orca", "openorca", split="train")' in body
    assert [c["config_name"] for c in meta["configs"]] == ["openorca", "full", "sharegpt"]
    assert len(hub.commits("tester/orca")) == 2  # the repo's initial commit + one push commit

    # the same export again: nothing changes, no new commit
    again = push(run / "dataset", "tester/orca")
    assert again.files_added == 0 and again.commit_oid == first.commit_oid
    assert len(hub.commits("tester/orca")) == 2

    # a re-export with more rows and fewer, larger shards: shards are replaced, stale ones deleted
    run = run_with_export(tmp_path / "run", 34, shard_rows=20, seed=1)
    before = tree_digest(run / "dataset")
    second = push(run, "tester/orca")
    assert second.commit_oid != first.commit_oid
    assert second.files_deleted == 9  # every "-of-00003" shard name is gone; two "-of-00002" per config
    assert len(hub.commits("tester/orca")) == 3
    files = hub.files("tester/orca")
    shards = sorted(p for p in files if p.endswith(".parquet"))
    assert shards == sorted(
        f"{c}/data/train-0000{i}-of-00002.parquet" for c in ("openorca", "full", "sharegpt") for i in range(2)
    )
    assert tree_digest(run / "dataset") == before  # pushing never writes locally

    loaded = load_from_hub(hub.endpoint, "tester/orca", ["openorca", "full", "sharegpt"], tmp_path, TOKEN)
    assert isinstance(loaded, dict), loaded
    for config in ("openorca", "full", "sharegpt"):
        assert loaded[config] == local_rows(run / "dataset", config), config
    assert len(loaded["openorca"]) == 34


def test_token_from_the_login_file_and_public_repos(hub: FakeHub, tmp_path: Path) -> None:
    Path(huggingface_hub.constants.HF_TOKEN_PATH).write_text(TOKEN)  # what `hf auth login` saves
    run = run_with_export(tmp_path / "run", 8)
    result = push(run, "tracegen-org/public-orca", private=False)
    assert not result.private and not hub.is_private("tracegen-org/public-orca")
    info = HfApi(endpoint=hub.endpoint).dataset_info("tracegen-org/public-orca", token=False)
    assert info.private is False  # readable without a token


def test_private_repo_is_hidden_from_anonymous_and_other_users(hub: FakeHub, tmp_path: Path) -> None:
    push(run_with_export(tmp_path / "run", 6), "tester/secret", token=TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint).dataset_info("tester/secret", token=False)
    hub.add_token("hf_otherUSERtoken12345", "mallory")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint).dataset_info("tester/secret", token="hf_otherUSERtoken12345")


def test_config_name_pushes_one_config_and_keeps_the_others(hub: FakeHub, tmp_path: Path) -> None:
    run = run_with_export(tmp_path / "run", 10, shard_rows=4)
    push(run, "tester/orca", token=TOKEN)
    run = run_with_export(tmp_path / "run", 10, shard_rows=10, seed=2)
    result = push(run, "tester/orca", token=TOKEN, config_name="full")
    assert result.configs == ("full",)
    files = hub.files("tester/orca")
    assert sorted(p for p in files if p.startswith("full/")) == ["full/data/train-00000-of-00001.parquet"]
    assert "openorca/data/train-00002-of-00003.parquet" in files  # untouched
    meta, _ = split_card(files["README.md"].decode())
    names = [c["config_name"] for c in meta["configs"]]
    assert names == ["full", "openorca", "sharegpt"]
    assert [c.get("default", False) for c in meta["configs"]] == [False, True, False]
    assert {i["config_name"] for i in meta["dataset_info"]} == set(names)
    with pytest.raises(HubError, match="'alpaca' is not in the export; exported configs: openorca, full"):
        push(run, "tester/orca", token=TOKEN, config_name="alpaca")


def test_push_keeps_card_edits_made_on_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    run = run_with_export(tmp_path / "run", 6)
    push(run, "tester/orca", token=TOKEN)
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    meta, body = split_card(hub.files("tester/orca")["README.md"].decode())
    meta |= {"license": "mit", "extra_gated_prompt": "Agree to the terms."}
    edited = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\nWritten by hand.\n" + body
    api.upload_file(
        path_or_fileobj=edited.encode(),
        path_in_repo="README.md",
        repo_id="tester/orca",
        repo_type="dataset",
        commit_message="edit card",
    )
    run = run_with_export(tmp_path / "run", 9, seed=3)
    push(run, "tester/orca", token=TOKEN)
    meta, body = split_card(hub.files("tester/orca")["README.md"].decode())
    assert meta["license"] == "mit" and meta["extra_gated_prompt"] == "Agree to the terms."
    assert body.lstrip().startswith("Written by hand.")
    assert (
        "9 Orca-style explanation traces" in body
        and meta["dataset_info"][0]["splits"][0]["num_examples"] == 9
    )


def assert_untouched(hub: FakeHub, run: Path, before: dict[str, str], token: str | None = None) -> None:
    assert tree_digest(run / "dataset") == before
    assert hub.repo_ids() == []
    assert not any(m == "POST" and "/commit/" in p for m, p, _ in hub.requests())
    if token:
        for _, path, _ in hub.requests():
            assert token not in path


def test_no_token(hub: FakeHub, tmp_path: Path) -> None:
    run = run_with_export(tmp_path / "run", 5)
    before = tree_digest(run / "dataset")
    with pytest.raises(HubError) as err:
        push(run, "tester/orca")
    assert str(err.value) == NO_TOKEN == "no Hugging Face token: set HF_TOKEN or run `hf auth login`"
    assert hub.requests() == []
    assert_untouched(hub, run, before)


def test_bad_token(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "hf_WRONGtokenVALUE9876543210"
    monkeypatch.setenv("HF_TOKEN", bad)
    run = run_with_export(tmp_path / "run", 5)
    before = tree_digest(run / "dataset")
    with pytest.raises(HubError) as err:
        push(run, "tester/orca")
    message = str(err.value)
    assert "401" in message and "HF_TOKEN" in message and "\n" not in message
    assert bad not in message and "WRONG" not in message
    assert_untouched(hub, run, before, bad)


def test_unknown_namespace(hub: FakeHub, tmp_path: Path) -> None:
    run = run_with_export(tmp_path / "run", 5)
    before = tree_digest(run / "dataset")
    with pytest.raises(HubError) as err:
        push(run, "somebody-else/orca", token=TOKEN)
    message = str(err.value)
    assert "no write access to namespace 'somebody-else' (403)" in message
    assert "tester, tracegen-org" in message and "\n" not in message and TOKEN not in message
    assert_untouched(hub, run, before, TOKEN)


def test_unreachable_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    run = run_with_export(tmp_path / "run", 5)
    before = tree_digest(run / "dataset")
    with pytest.raises(HubError) as err:
        push(run, "tester/orca", token=TOKEN, timeout_s=2)
    message = str(err.value)
    assert message.startswith(f"cannot reach the Hugging Face Hub at http://127.0.0.1:{port}")
    assert "HF_ENDPOINT" in message and TOKEN not in message
    assert tree_digest(run / "dataset") == before


def test_offline_mode_and_bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_with_export(tmp_path / "run", 5)
    with pytest.raises(HubError, match="offline mode"):  # conftest keeps HF_HUB_OFFLINE=1
        push(run, "tester/orca", token=TOKEN, endpoint="http://127.0.0.1:9")
    with pytest.raises(HubError, match="not of the form namespace/name"):
        push(run, "a/b/c", token=TOKEN)
    with pytest.raises(RunDirError, match="tracegen export"):
        push(tmp_path / "nothing-here", "tester/orca", token=TOKEN)


# ---- the fake Hub's protocol, seen through huggingface_hub -------------------------------------------------


def test_fake_hub_protocol_details(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo("tester/proto", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("tester/proto", repo_type="dataset")
    assert conflict.value.response.status_code == 409
    folder = tmp_path / "up"
    (folder / "d").mkdir(parents=True)
    for i in range(5):
        (folder / "d" / f"f{i}.txt").write_text(f"file {i}")
    (folder / "blob.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
    api.upload_folder(repo_id="tester/proto", repo_type="dataset", folder_path=folder, commit_message="up")

    hub.page_size = 2  # tree listing follows the Link header across pages
    assert sorted(api.list_repo_files("tester/proto", repo_type="dataset")) == sorted(
        [".gitattributes", "blob.parquet", *(f"d/f{i}.txt" for i in range(5))]
    )
    hub.page_size = 1000
    (entry,) = api.get_paths_info("tester/proto", ["blob.parquet"], repo_type="dataset")
    assert (
        entry.lfs is not None
        and entry.lfs.sha256 == hashlib.sha256((folder / "blob.parquet").read_bytes()).hexdigest()
    )

    session = huggingface_hub.get_session()
    url = f"{hub.endpoint}/datasets/tester/proto/resolve/main/blob.parquet"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    part = session.get(url, headers=auth | {"Range": "bytes=4-7"})
    assert part.status_code == 206 and part.content == bytes(range(4))
    head = session.head(url, headers=auth)
    assert head.headers["X-Linked-Etag"].strip('"') == entry.lfs.sha256
    assert head.headers["X-Repo-Commit"] == api.dataset_info("tester/proto").sha

    def commit(lines: list[dict[str, Any]]) -> int:
        body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        r = session.post(
            f"{hub.endpoint}/api/datasets/tester/proto/commit/main",
            content=body,
            headers=auth | {"Content-Type": "application/x-ndjson"},
        )
        return r.status_code

    header = {"key": "header", "value": {"summary": "x", "description": ""}}
    stale = {"key": "header", "value": {"summary": "x", "description": "", "parentCommit": "0" * 40}}
    assert commit([stale]) == 412
    assert commit([header, {"key": "deletedFile", "value": {"path": "nope.txt"}}]) == 404
    assert (
        commit([header, {"key": "lfsFile", "value": {"path": "z.bin", "algo": "sha256", "oid": "a" * 64}}])
        == 422
    )
    bad_card = base64.b64encode(b"---\nlicense: nope\n---\n").decode()
    assert (
        commit(
            [
                header,
                {"key": "file", "value": {"path": "README.md", "content": bad_card, "encoding": "base64"}},
            ]
        )
        == 400
    )
    assert commit([header, {"key": "deletedFolder", "value": {"path": "d"}}]) == 200
    assert not any(p.startswith("d/") for p in hub.files("tester/proto"))
