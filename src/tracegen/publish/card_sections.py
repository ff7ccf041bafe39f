"""The card's body, one function per section: generation, composition, spend, cleaning, decontamination,
configs, loading, TRL, license (:mod:`tracegen.publish.card` puts them together).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .card_meta import DEFAULT_LICENSE, CardOptions

# ---- body --------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 1 or value == 0 else f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (Mapping, list, tuple)):
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
        value = text if len(text) <= 300 else text[:297] + "..."
    text = str(value).replace("\r\n", "\n").replace("\n", "⏎").replace("|", "\\|")
    return text


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _money(usd: Any) -> str:
    try:
        return f"${float(usd):,.4f}"
    except (TypeError, ValueError):
        return _cell(usd)


def _share(n: int, total: int) -> str:
    return f"{100.0 * n / total:.2f}%" if total else "—"


_GEN_KEYS = (
    "model",
    "base_url",
    "mode",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "n",
    "mix",
    "niv_max_per_task",
    "templates",
    "system_message_spelling",
    "mc_detector",
    "shard",
    "filters",
    "dedup",
)


def _display_source(src: Any) -> str:
    text = str(src)
    return Path(text).name or text if os.path.isabs(text) else text


def _generation_section(manifest: Mapping[str, Any]) -> list[str]:
    run = manifest.get("run", {})
    config: Mapping[str, Any] = run.get("config") or {}
    out = ["## Generation", ""]
    by_model = manifest.get("tally", {}).get("by_model", [])
    if by_model:
        out += [
            "Teacher models, as requested and as the API named them in its answers:",
            "",
            _table(
                ["requested", "returned", "rows"],
                [(m["model"] or "—", m["model_returned"] or "—", m["rows"]) for m in by_model],
            ),
            "",
        ]
    rows: list[tuple[str, Any]] = []
    sources = config.get("source")
    if sources is not None:
        shown = (
            [_display_source(s) for s in sources] if isinstance(sources, list) else [_display_source(sources)]
        )
        rows.append(("source", ", ".join(shown) or "flan-v2 preset"))
    prices = (run.get("stats") or {}).get("prices") or {}
    not_sent = ("temperature", "top_p") if prices.get("reasoning") is True else ()
    rows += [
        (k, "not sent (reasoning model)" if k in not_sent else config[k])
        for k in _GEN_KEYS
        if k in config and config[k] not in (None, {}, [])
    ]
    if config.get("reasoning_effort"):
        rows.append(("reasoning_effort", config["reasoning_effort"]))
    if "templates" in config and not config["templates"]:
        rows.append(("templates", "built-in: Orca Table 2 system messages per submix (Orca §3.1.1)"))
    rows.append(("tracegen version", run.get("tracegen_version") or manifest.get("tracegen_version")))
    if run.get("created"):
        rows.append(("run created", run.get("created")))
    rows.append(("exported", manifest.get("created_utc")))
    rows.append(("exported from", manifest.get("source")))
    out += [_table(["setting", "value"], rows), ""]
    if not config:
        out += ["_The run's manifest.json was not found: the generation config is unknown._", ""]
    return out


def _composition_section(manifest: Mapping[str, Any]) -> list[str]:
    tally = manifest.get("tally", {})
    total = int(tally.get("rows", 0))
    out = ["## Composition", ""]
    by_submix = tally.get("by_submix", {})
    if by_submix:
        out += [
            "Rows per FLAN v2 submix (Orca §3.1: cot, niv = NIv2, flan = Flan2021, t0 = T0/P3):",
            "",
            _table(["submix", "rows", "share"], [(k, v, _share(v, total)) for k, v in by_submix.items()]),
            "",
        ]
    by_stage = {k: v for k, v in tally.get("by_stage", {}).items()}
    if len(by_stage) > 1:
        out += [
            "Rows per stage (progressive learning: train on the stages in this order):",
            "",
            _table(["stage", "rows"], list(by_stage.items())),
            "",
        ]
    systems = tally.get("by_system_message", [])
    if systems:
        merged: dict[tuple[Any, str], int] = {}
        trained: dict[str, int] = {}
        for s in systems:
            merged[(s.get("id"), s["text"])] = merged.get((s.get("id"), s["text"]), 0) + int(s["rows"])
            if s.get("train_text") is not None:
                trained[s["train_text"]] = trained.get(s["train_text"], 0) + int(s["rows"])
        out += [
            "Rows per system message the teacher saw (ids are Orca Table 2; ⏎ marks a newline):",
            "",
            _table(
                ["id", "rows", "share", "system message"],
                [
                    (sid, n, _share(n, total), text or "(empty: no system message)")
                    for (sid, text), n in merged.items()
                ],
            ),
            "",
        ]
        if trained:
            out += [
                f"Prompt erasure (Orca 2): {sum(trained.values()):,} rows were answered under the message "
                "above but are exported with a generic training message in the system column; the `full` "
                "config keeps both (`system_prompt`, `train_system_prompt`).",
                "",
                _table(
                    ["training system message", "rows"],
                    [(text or "(empty: no system message)", n) for text, n in trained.items()],
                ),
                "",
            ]
    return out


def _spend_section(manifest: Mapping[str, Any]) -> list[str]:
    tally = manifest.get("tally", {})
    stats = manifest.get("run", {}).get("stats") or {}
    out = ["## Tokens and cost", ""]
    rows: list[tuple[str, Any]] = [
        ("prompt tokens (exported rows)", tally.get("prompt_tokens", 0)),
        ("completion tokens (exported rows)", tally.get("completion_tokens", 0)),
        ("cost of exported rows", _money(tally.get("cost_usd", 0.0))),
    ]
    out += [_table(["", "value"], rows), ""]
    anomalies, mismatches = int(stats.get("usage_anomalies") or 0), int(stats.get("usage_mismatches") or 0)
    if anomalies or mismatches:
        out += [
            f"**Usage check:** the endpoint reported impossible usage for {anomalies} answer(s) (charged at "
            f"tracegen's worst-case reservation) and a prompt-token count far from tracegen's own for "
            f"{mismatches} answer(s) (charged the larger of the two).",
            "",
        ]
    if stats:
        out += [
            "The whole run (stats.json), including answers later filtered out:",
            "",
            *_kv_tables(stats),
            "",
        ]
    return out


def _kv_tables(data: Mapping[str, Any]) -> list[str]:
    """A key/value table of the scalars, then one table per nested mapping."""
    out: list[str] = []
    flat = [
        (k, _money(v) if "usd" in k and isinstance(v, (int, float)) else v)
        for k, v in data.items()
        if not isinstance(v, Mapping)
    ]
    if flat:
        out += [_table(["", "value"], flat), ""]
    for k, v in data.items():
        if isinstance(v, Mapping) and v:
            out += [f"**{k.replace('_', ' ')}**", "", _table([k, "value"], list(v.items())), ""]
    return out


def _cleaning_section(manifest: Mapping[str, Any]) -> list[str]:
    run = manifest.get("run", {})
    clean = run.get("clean_stats")
    plan = run.get("plan_stats")
    out = ["## Filtering and deduplication", ""]
    if clean:
        out += ["Quality filters and dedup after generation (clean_stats.json):", "", *_kv_tables(clean)]
    else:
        out += [
            "_No post-processing stats (clean_stats.json): the rows are the teacher's answers as returned "
            "(traces.jsonl), unfiltered._",
            "",
        ]
    if plan:
        out += ["The sampling plan (plan_stats.json), including dedup before sending:", "", *_kv_tables(plan)]
    tally = manifest.get("tally", {})
    check = tally.get("answer_check", {})
    total = int(tally.get("rows", 0))
    out += [
        "## Answer check",
        "",
        "Whether each response's final answer agrees with FLAN's reference answer (`agrees_with_target` in "
        "the `full` config; unknown = the reference is not a short answer, or the check could not tell):",
        "",
        _table(["verdict", "rows", "share"], [(k, v, _share(v, total)) for k, v in check.items()]),
        "",
    ]
    finish = tally.get("finish_reason", {})
    if finish:
        out += [
            "Finish reasons of the exported answers:",
            "",
            _table(["finish_reason", "rows"], finish.items()),
            "",
        ]
    return out


def _decontamination_section(manifest: Mapping[str, Any]) -> list[str]:
    """Rows left out for overlapping an evaluation set (``--decontaminate``), per set."""
    run = manifest.get("run", {})
    plan = run.get("plan_stats") or {}
    counts = plan.get("decontaminated") or {}
    if not counts:
        return []
    config = (run.get("stats") or {}).get("config") or run.get("config") or {}
    ngram = config.get("decontaminate_ngram", 13)
    return [
        "## Decontamination",
        "",
        f"Source rows whose question shares a {ngram}-word sequence with an item of these evaluation sets "
        f"(or equals a shorter item; case, spacing and punctuation ignored) were left out before anything "
        "was sent (listed in the run's `rejected.jsonl`, reason `contaminated`):",
        "",
        _table(
            ["evaluation set", "rows dropped"], [(f"`{_display_source(k)}`", v) for k, v in counts.items()]
        ),
        "",
    ]


def _configs_section(manifest: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]) -> list[str]:
    from .export import FORMATS  # local: export imports this module

    rows = []
    for c in configs:
        fmt = FORMATS.get(c.get("format", ""))
        rows.append(
            (
                f"`{c['name']}`",
                c.get("format"),
                c.get("stage") or "—",
                c["rows"],
                fmt.description if fmt else "",
            )
        )
    stages = list(dict.fromkeys(c.get("stage") or "" for c in configs))
    intro = "Each config holds the same rows in the same order (plan order), in a different layout:"
    if len(stages) > 1:
        intro = (
            "One config per format and teacher stage (progressive learning: train on "
            + " then ".join(f"`{s}`" for s in stages)
            + "); configs of the same stage hold the same rows in plan order:"
        )
    return [
        "## Configs",
        "",
        intro,
        "",
        _table(["config", "format", "stage", "rows", "columns"], rows),
        "",
    ]


def _load_section(configs: Sequence[Mapping[str, Any]], repo_id: str | None) -> list[str]:
    name = configs[0]["name"] if configs else "openorca"
    repo = repo_id or "<user>/<dataset>"
    lines = [
        "## How to load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo}", "{name}", split="train")',
        "print(ds[0])",
        "```",
        "",
    ]
    if repo_id is None:
        lines += [
            "From this folder, before pushing:",
            "",
            "```python",
            f'ds = load_dataset("path/to/this/folder", "{name}", split="train")',
            "```",
            "",
        ]
    messages = [c["name"] for c in configs if c.get("format") == "messages"]
    if messages:
        lines += _trl_section(repo, messages[-1])
    return lines


def _trl_section(repo: str, name: str) -> list[str]:
    """How to train on the ``messages`` config: TRL's conversational format, loaded as is."""
    return [
        f"The `{name}` config is in TRL's conversational format (a `messages` column of `role`/`content` "
        "turns: system when the row has one, user, assistant): `SFTTrainer` applies the model's chat "
        "template to it directly.",
        "",
        "```python",
        "from datasets import load_dataset",
        "from trl import SFTConfig, SFTTrainer",
        "",
        f'ds = load_dataset("{repo}", "{name}", split="train")',
        'trainer = SFTTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", train_dataset=ds, args=SFTConfig(output_dir="sft"))',
        "trainer.train()",
        "```",
        "",
    ]


_CITATION = """```bibtex
@misc{mukherjee2023orca,
  title         = {Orca: Progressive Learning from Complex Explanation Traces of GPT-4},
  author        = {Subhabrata Mukherjee and Arindam Mitra and Ganesh Jawahar and Sahaj Agarwal and
                   Hamid Palangi and Ahmed Awadallah},
  year          = {2023},
  eprint        = {2306.02707},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CL}
}
@misc{mitra2023orca2,
  title         = {Orca 2: Teaching Small Language Models How to Reason},
  author        = {Arindam Mitra and Luciano Del Corro and Shweti Mahajan and Andres Codas and others},
  year          = {2023},
  eprint        = {2311.11045},
  archivePrefix = {arXiv},
  primaryClass  = {cs.AI}
}
@misc{longpre2023flan,
  title         = {The Flan Collection: Designing Data and Methods for Effective Instruction Tuning},
  author        = {Shayne Longpre and Le Hou and Tu Vu and Albert Webson and Hyung Won Chung and others},
  year          = {2023},
  eprint        = {2301.13688},
  archivePrefix = {arXiv},
  primaryClass  = {cs.AI}
}
```"""


def _license_section(options: CardOptions) -> list[str]:
    text = (
        f"Declared license: `{options.license}`. The questions come from the FLAN v2 collection, whose "
        "source datasets carry their own licenses; the responses were written by the teacher model(s) "
        "above, so the provider's terms of use apply to them (OpenAI's, for example, restrict using "
        "outputs to develop competing models). Check both before you redistribute or train on this data."
    )
    if options.license == DEFAULT_LICENSE:
        text += (
            " tracegen leaves the license as `other` by default; OpenOrca and SlimOrca were published as "
            "`mit`, Dolphin as `apache-2.0`."
        )
    return ["## License and terms", "", text, ""]
