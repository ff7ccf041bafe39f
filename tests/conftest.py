"""Shared test fixtures: every test runs offline with no secrets in the environment."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No OPENAI_*, HF_* (except the offline switches) or TRACEGEN_* variable leaks into a test."""
    keep = {"HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_XET"}
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "TRACEGEN_", "AZURE_OPENAI_")) or (
            name.startswith("HF_") and name not in keep
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    # parsed BPE ranks (tracegen.planning.tokens): one cache per test session, never the user's
    monkeypatch.setenv("TRACEGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tracegen-cache"))
