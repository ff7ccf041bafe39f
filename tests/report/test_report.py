"""tracegen report: one self-contained HTML page, checked in a real browser (headless Chromium) when present."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import REPO
from tracegen.cli import app
from tracegen.report import collect, render, write_report
from tracegen.report.render import embed_json

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (Debian: apt-get install chromium); the page is not rendered",
)
EVIL = (
    "</script><script>document.body.setAttribute('data-pwned','1')</script><!--<script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">"
)


def chromium(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1280,2400", *extra, url,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def dom(tmp: Path, page: Path) -> str:
    proc = chromium(tmp, page.as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rehearse(out: Path, config: str = "examples/config.yaml", *extra: str) -> Path:
    result = CliRunner().invoke(
        app, ["run", "--config", str(REPO / config), "--rehearse", "--output-dir", str(out), *extra]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rehearsed run with a poisoned question, so escaping is tested on the real pipeline's output."""
    root = tmp_path_factory.mktemp("report")
    old = Path.cwd()
    os.chdir(REPO)  # the example config names its source relative to the repository
    try:
        return rehearse(root / "run")
    finally:
        os.chdir(old)


def tile(html: str, key: str) -> str:
    m = re.search(rf'data-key="{key}"><div class="k">{key}</div><div class="v">([^<]*)</div>', html)
    assert m, f"no {key} tile"
    return m.group(1)


def test_run_writes_the_report_and_it_holds_the_runs_own_numbers(run_dir: Path) -> None:
    page = run_dir / "report.html"
    assert page.is_file()  # written at the end of `tracegen run`
    html = page.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)  # nothing loaded from anywhere
    assert "default-src 'none'" in html
    data = json.loads(
        re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1]
    )  # type: ignore[index]
    stats = json.loads((run_dir / "stats.json").read_text())
    clean = json.loads((run_dir / "clean_stats.json").read_text())
    plan = json.loads((run_dir / "plan_stats.json").read_text())
    assert data["stats"]["succeeded"] == stats["succeeded"]
    assert data["clean"]["kept"] == clean["kept"]
    assert {m["key"]: m["planned"] for m in data["mix"]["submix"]} == {
        k: v for k, v in plan["planned"].items() if v
    }
    assert {m["key"]: m["kept"] for m in data["mix"]["submix"] if m["kept"]} == clean["rows_per_submix"]
    assert data["timeline"]["timed"] and data["timeline"]["points"][-1][1] == pytest.approx(
        stats["cost_usd"], rel=1e-6
    )
    reasons = {(r["stage"], r["reason"]): r["n"] for r in data["reasons"]}
    assert {k: v for k, v in reasons.items() if k[0] == "dedup"} == {
        ("dedup", k): v for k, v in clean["removed_by_dedup"].items()
    }
    for (stage, reason), n in reasons.items():  # the plan's drops: counted in full by plan_stats.json
        if stage == "plan":
            assert n == plan["dropped"][reason]
    kept = [r for r in data["rows"] if r["status"] == "kept"]
    assert len(kept) == min(clean["kept"], 400)
    assert sum(v["n"] for v in data["lengths"]["submix"].values()) == stats["succeeded"]


@needs_chromium
def test_the_page_renders_in_chromium_with_numbers_and_charts(run_dir: Path, tmp_path: Path) -> None:
    html = dom(tmp_path, run_dir / "report.html")
    assert 'data-rendered="1"' in html  # the script ran to the end
    stats = json.loads((run_dir / "stats.json").read_text())
    clean = json.loads((run_dir / "clean_stats.json").read_text())
    plan = json.loads((run_dir / "plan_stats.json").read_text())
    assert tile(html, "planned") == f"{plan['planned_total']:,}"
    assert tile(html, "answered") == f"{stats['succeeded']:,}"
    assert tile(html, "kept") == f"{clean['kept']:,}"
    assert tile(html, "spent") == f"${stats['total_spent_usd']:.4f}"
    for chart in ("chart-spend", "chart-rate", "chart-latency", "chart-mix"):
        block = re.search(rf'id="{chart}".*?</svg>', html, re.S)
        assert block and ("<path" in block[0] or "<rect" in block[0]), chart  # type: ignore[index]
    assert html.count('class="mini"') >= 4  # one length histogram per submix
    for reason, n in clean["removed_by_dedup"].items():
        if n:
            assert re.search(rf"<td>{reason}</td><td class=\"num\">{n:,}</td>", html), reason
    assert html.count('class="row sample-row"') == 10  # first page of the browser
    rejected = [json.loads(x) for x in (run_dir / "rejected.jsonl").read_text().splitlines()]
    per_reason = Counter(str(x["reason"]) for x in rejected)
    sampled = min(clean["kept"], 400) + sum(min(n, 40) for n in per_reason.values())
    assert f"of {sampled:,} sampled rows" in html
    shot = tmp_path / "report.png"
    proc = chromium(tmp_path, (run_dir / "report.html").as_uri(), f"--screenshot={shot}", "--hide-scrollbars")
    assert proc.returncode == 0 and shot.stat().st_size > 20_000  # a page with charts, not a blank one


@needs_chromium
def test_hostile_text_stays_text(tmp_path: Path, run_dir: Path) -> None:
    data: dict[str, Any] = collect(run_dir)
    data["run"] = EVIL
    data["rows"][0]["question"] = EVIL + " & <b>bold</b>"
    data["mix"]["system_texts"]["1"] = EVIL
    page = tmp_path / "evil.html"
    page.write_text(render(data))
    raw = page.read_text()
    assert raw.count("</script>") == 2 and "<!--<script>" not in raw  # only our own two script ends
    html = dom(tmp_path, page)
    assert 'data-rendered="1"' in html and "data-pwned=" not in html  # nothing in the data ran
    assert "&lt;/script&gt;&lt;script&gt;document.body" in html  # shown as text
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_embed_json_has_no_markup_characters() -> None:
    text = embed_json({"a": "</script><!-- & >", "b": ["\u2028"]})
    assert not set("<>&") & set(text)
    assert json.loads(text) == {"a": "</script><!-- & >", "b": ["\u2028"]}


@needs_chromium
def test_staged_run_side_by_side_and_decontamination(tmp_path: Path) -> None:
    ev = tmp_path / "eval.jsonl"
    ev.write_text(
        json.dumps({"q": "Which sense do ears provide? Pick from: smell, hearing, taste, sight"}) + "\n"
    )
    old = Path.cwd()
    os.chdir(REPO)
    try:
        run = rehearse(tmp_path / "staged", "examples/progressive.yaml", "--decontaminate", f"{ev}:q")
    finally:
        os.chdir(old)
    html = dom(tmp_path, run / "report.html")
    side = re.search(r'id="side-by-side".*', html, re.S)
    assert (
        side and "gpt35 · tracegen-fake:gpt-3.5-turbo" in side[0] and "gpt4 · tracegen-fake:gpt-4" in side[0]
    )
    data = collect(run)
    assert data["side_by_side"] and all(set(r["answers"]) == {"gpt35", "gpt4"} for r in data["side_by_side"])
    assert data["decontaminated"] == {str(ev): 1}
    assert re.search(r'id="table-decontamination".*?<td class="num">1</td>', html, re.S)


def test_cli_report_and_bad_run_dir(tmp_path: Path, run_dir: Path) -> None:
    (run_dir / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0 and (run_dir / "report.html").is_file()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert bad.exit_code == 1 and "not a tracegen run directory" in bad.output


def test_a_large_run_stays_small(tmp_path: Path) -> None:
    """200,000 answered rows: bounded output (sampled rows, bucketed series), whatever the run's size."""
    run = tmp_path / "big"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"model": "m", "budget_usd": 100}}))
    line = {"id": "", "submix": "flan", "question": "q " * 50, "response": "r " * 150, "system_prompt": "s",
            "system_message_id": 3, "completion_tokens": 150, "cost_usd": 0.0001, "latency_s": 1.5}  # fmt: skip
    with (run / "traces.jsonl").open("w") as f, (run / "clean.jsonl").open("w") as g:
        for i in range(200_000):
            rec = {**line, "id": f"flan.{i}", "answered_at": 1_700_000_000 + i * 0.05}
            text = json.dumps(rec) + "\n"
            f.write(text)
            g.write(text)
    path = write_report(run)
    assert path.stat().st_size < 2_000_000
    data = collect(run)
    assert len(data["timeline"]["points"]) <= 240 and len(data["rows"]) == 400
    assert data["timeline"]["points"][-1][1] == pytest.approx(20.0)
