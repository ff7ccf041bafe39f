"""The CLI end to end, offline: dry run, a rehearsal run against the fake server, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracegen.cli import app

SAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "flan_sample")
runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_dry_run_writes_plan_and_requests(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run(
        "run", "-s", SAMPLE, "--n", "60", "--budget", "1", "--dry-run", "-o", str(out), "--json"
    )
    assert code == 0, text
    est = json.loads(text[text.index("{") :])
    assert est["requests"] == 60
    assert est["cost_usd"]["online_worst_usd"] >= est["cost_usd"]["online_expected_usd"] > 0
    lines = (out / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 60
    first = json.loads(lines[0])
    assert first["url"] == "/v1/chat/completions" and first["custom_id"] == first["custom_id"].strip()
    assert not (out / "traces.jsonl").exists()  # nothing was sent


def test_rehearsal_run_then_rerun_pays_nothing_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    secret = "sk-this-must-never-leak-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    args = ("run", "-s", SAMPLE, "--n", "40", "--budget", "1", "--rehearse", "-o", str(out), "--json")
    code, text = _run(*args)
    assert code == 0, text
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stop_reason"] == "completed"
    assert stats["succeeded"] == 40
    traces = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 40
    assert all(t["model_returned"].startswith("tracegen-fake:") for t in traces)
    assert (out / "dataset" / "README.md").exists()

    code, text = _run(*args)
    assert code == 0, text
    stats2 = json.loads((out / "stats.json").read_text())
    assert stats2["sent"] == 0 and stats2["skipped_done"] == 40
    assert len((out / "traces.jsonl").read_text().splitlines()) == 40

    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_changed_plan_is_refused_once_money_was_spent(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    assert _run("run", "-s", SAMPLE, "--n", "10", "--dry-run", "-o", out)[0] == 0
    # a dry run spent nothing: a new seed simply replaces it
    assert _run("run", "-s", SAMPLE, "--n", "10", "--seed", "7", "--dry-run", "-o", out)[0] == 0
    assert _run("run", "-s", SAMPLE, "--n", "10", "--seed", "7", "--rehearse", "-o", out)[0] == 0
    code, text = _run("run", "-s", SAMPLE, "--n", "10", "--seed", "8", "--rehearse", "-o", out)
    assert code == 1
    assert "seed" in text and f"--output-dir {out}-2" in text and "--seed 7" in text
    assert "Traceback" not in text


def test_no_key_is_one_clear_line(tmp_path: Path) -> None:
    code, text = _run("run", "-s", SAMPLE, "--n", "5", "-o", str(tmp_path / "run"))
    assert code == 1
    assert "OPENAI_API_KEY" in text and "Traceback" not in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--budget", "-1"), "--budget"),
        (("--shard", "3/2"), "--shard"),
        (("-s", "/definitely/not/here.jsonl"), "not/here.jsonl"),
        (("--model", "my-local-llama"), "--input-price"),
    ],
)
def test_bad_input_names_the_flag(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    base = ("run", "--n", "5", "--dry-run", "-o", str(tmp_path / "run"))
    if "-s" not in args:
        base = (*base, "-s", SAMPLE)
    code, text = _run(*base, *args)
    assert code == 1, text
    assert needle in text and "Traceback" not in text


def test_bad_config_file_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("budget_usd: 5\nbudjet: 3\n")
    code, text = _run("run", "-c", str(cfg), "-s", SAMPLE, "--dry-run", "-o", str(tmp_path / "r"))
    assert code == 1
    assert "budjet" in text and str(cfg) in text


def test_stats_and_export_commands(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run("run", "-s", SAMPLE, "--n", "30", "--rehearse", "-o", str(out))[0] == 0
    code, text = _run("stats", str(out), "--json")
    assert code == 0, text
    assert json.loads(text[text.index("{") :])["stats"]["succeeded"] == 30
    code, text = _run("export", str(out), "--format", "alpaca", "--format", "sharegpt")
    assert code == 0, text
    assert (out / "dataset" / "alpaca").is_dir() and (out / "dataset" / "sharegpt").is_dir()


def test_rehearsal_answers_never_mix_with_real_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path / "run")
    assert _run("run", "-s", SAMPLE, "--n", "10", "--rehearse", "-o", out)[0] == 0
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-looking")
    code, text = _run("run", "-s", SAMPLE, "--n", "10", "-o", out)
    assert code == 1
    assert "rehearsal" in text and "--output-dir" in text and "Traceback" not in text


def test_batch_mode_rehearsal_and_status(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run("run", "-s", SAMPLE, "--n", "30", "--mode", "batch", "--rehearse", "-o", str(out))
    assert code == 0, text
    stats = json.loads((out / "stats.json").read_text())
    assert stats["succeeded"] == 30 and stats["stop_reason"] == "completed"
    code, text = _run("batch", "status", str(out), "--json")
    assert code == 0, text
    rows = json.loads(text[text.index("[") :])
    assert rows and all(r["status"] == "completed" for r in rows)


def test_run_push_to_hub_then_push_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    from tracegen.testing.fake_hub import FakeHub

    with FakeHub(token="hf_cli_test_token_123") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_cli_test_token_123")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
        out = tmp_path / "run"
        code, text = _run(
            "run", "-s", SAMPLE, "--n", "20", "--rehearse", "-o", str(out), "--push-to-hub", "tester/orca-cli"
        )
        assert code == 0, text
        assert "tester/orca-cli" in hub.repo_ids() and hub.is_private("tester/orca-cli")
        files = hub.files("tester/orca-cli")
        assert "README.md" in files and any(f.endswith(".parquet") for f in files)
        commits = len(hub.commits("tester/orca-cli"))
        code, text = _run("push", str(out), "tester/orca-cli")
        assert code == 0, text
        assert len(hub.commits("tester/orca-cli")) == commits  # identical push: nothing new
        for f in files:
            assert b"hf_cli_test_token_123" not in hub.files("tester/orca-cli")[f]


def test_push_without_token_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run("run", "-s", SAMPLE, "--n", "10", "--rehearse", "-o", str(out))[0] == 0
    code, text = _run("push", str(out), "me/x")
    assert code == 1 and "Traceback" not in text
    assert (out / "dataset" / "README.md").exists()


def test_bad_record_stops_or_is_skipped(tmp_path: Path) -> None:
    src = tmp_path / "cot_submix.jsonl"
    good = {
        "inputs": "What is 2+2?",
        "targets": "4",
        "task_source": "CoT",
        "task_name": "cot_x",
        "template_type": "zs_opt",
    }
    src.write_text(json.dumps(good) + "\n" + '{"inputs": 5, "targets": "x"}\n' + "{not json\n")
    code, text = _run("run", "-s", str(src), "--n", "5", "--dry-run", "-o", str(tmp_path / "a"))
    assert code == 1
    assert f"{src}:2" in text and "--skip-bad-records" in text
    out = tmp_path / "b"
    code, text = _run("run", "-s", str(src), "--n", "5", "--dry-run", "--skip-bad-records", "-o", str(out))
    assert code == 0, text
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rejected] == ["source", "source"]
    assert len((out / "plan.jsonl").read_text().splitlines()) == 1


def test_rehearsal_card_says_it_is_not_real_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run("run", "-s", SAMPLE, "--n", "10", "--rehearse", "-o", str(out))[0] == 0
    card = (out / "dataset" / "README.md").read_text()
    assert "Rehearsal data — not real model outputs" in card


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [("filters:\n  refusl: false\n", "refusl"), ("dedup:\n  response_threshold: 2\n", "response_threshold")],
)
def test_bad_cleaning_settings_fail_before_anything_is_sent(
    tmp_path: Path, yaml_text: str, needle: str
) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    code, text = _run("run", "-c", str(cfg), "-s", SAMPLE, "--rehearse", "-o", str(tmp_path / "r"))
    assert code == 1 and needle in text and str(cfg) in text
    assert not (tmp_path / "r" / "traces.jsonl").exists()


def test_the_quick_exit_runs_the_exit_handlers_and_flushes_piped_output() -> None:
    import subprocess
    import sys

    code = (
        "import atexit; from tracegen.cli_support import quick_exit; "
        "atexit.register(lambda: print('handler ran')); print('buffered', end=''); quick_exit(3)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "buffered" in proc.stdout and "handler ran" in proc.stdout
