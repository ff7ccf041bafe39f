"""The dataset card (README.md): Hub-valid YAML metadata and a body that says how the data was made.

The card is rendered from an export's ``export.json`` (see :mod:`tracegen.publish.export`), so it can be rendered
again at push time with the real repo id, without the run directory. It holds:

- YAML metadata the Hub validates: ``license`` (default ``other``, see below), ``language``,
  ``task_categories``, ``size_categories`` (the Hub's buckets, from the row count), ``tags`` (synthetic, orca,
  tracegen, distillation, ...), ``pretty_name``, ``configs`` (one per exported config, with ``data_files``,
  the first marked ``default``) and ``dataset_info`` (features and row counts per config);
- the body: what the dataset is, its configs, how to load it, the generation config (teachers as requested and
  as returned, sampling parameters, seed, source, mix, templates), rows per submix / stage / system message
  (with the text), tokens and dollars, filter and dedup counts, answer-check agreement, license notes, the
  Orca citation and the tracegen version.

License default: ``other``. The responses are a teacher model's outputs, governed by that provider's terms
(OpenAI's, for instance, restrict using outputs to build competing models) and the prompts come from FLAN v2's
mixed-license sources, so tracegen does not pick a license for you. OpenOrca and SlimOrca were published as
``mit``, Dolphin as ``apache-2.0``: pass ``CardOptions(license=...)`` once you have checked the terms.

Secrets never reach the card: every run file goes through :func:`scrub_secrets` first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .. import redact as _redact
from .._version import __version__
from ..errors import ConfigError

__all__ = [
    "DEFAULT_LICENSE",
    "HUB_LICENSES",
    "SIZE_CATEGORIES",
    "CardOptions",
    "card_metadata",
    "merge_card",
    "render_card",
    "rows_of",
    "scrub_secrets",
    "secret_values",
    "size_category",
    "split_card",
    "validate_card",
]

DEFAULT_LICENSE = "other"

_LICENSE_IDS = """
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear
c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0
cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl
ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1
lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3
llama4 grok2-community gemma unknown other
"""
#: License ids the Hub accepts in ``license:`` (its validator rejects anything else).
HUB_LICENSES: frozenset[str] = frozenset(_LICENSE_IDS.split())

#: The Hub's ``size_categories`` buckets, smallest first, with the exclusive upper bound of each.
SIZE_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("n<1K", 1e3),
    ("1K<n<10K", 1e4),
    ("10K<n<100K", 1e5),
    ("100K<n<1M", 1e6),
    ("1M<n<10M", 1e7),
    ("10M<n<100M", 1e8),
    ("100M<n<1B", 1e9),
    ("1B<n<10B", 1e10),
    ("10B<n<100B", 1e11),
    ("100B<n<1T", 1e12),
    ("n>1T", float("inf")),
)

BASE_TAGS = ("synthetic", "orca", "tracegen", "distillation", "flan", "explanation-traces")

_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def size_category(rows: int) -> str:
    """The Hub's size bucket for a row count (1,000 rows is ``1K<n<10K``)."""
    for name, upper in SIZE_CATEGORIES:
        if rows < upper:
            return name
    return SIZE_CATEGORIES[-1][0]  # pragma: no cover - inf bound


@dataclass
class CardOptions:
    """What the user chooses about the card (the rest comes from the run)."""

    license: str = DEFAULT_LICENSE
    """A Hub license id (see HUB_LICENSES). Default ``other``: check the teacher's terms, then set it."""
    license_name: str | None = None
    """With ``license: other``: a short id for the terms, e.g. ``openai-terms-of-use``."""
    license_link: str | None = None
    """With ``license: other``: a URL (or LICENSE file in the repo) with the terms."""
    pretty_name: str | None = None
    language: tuple[str, ...] = ("en",)
    task_categories: tuple[str, ...] = ("text-generation", "question-answering")
    extra_tags: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise ConfigError when the Hub would reject these values."""
        if self.license not in HUB_LICENSES:
            raise ConfigError(
                f"license {self.license!r} is not a Hub license id; use one of "
                "mit, apache-2.0, cc-by-4.0, cc-by-nc-4.0, other, ... (https://hf.co/docs/hub/repositories-licenses)"
            )
        for lang in self.language:
            if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)*", lang):
                raise ConfigError(f"language {lang!r} is not an ISO 639 code such as 'en'")
        for tag in (*self.task_categories, *self.extra_tags):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", tag):
                raise ConfigError(f"tag {tag!r}: use letters, digits and - _ . + only")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for k in ("language", "task_categories", "extra_tags"):
            data[k] = list(data[k])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CardOptions:
        data = dict(data or {})
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        for k in ("language", "task_categories", "extra_tags"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)


# ---- secrets -----------------------------------------------------------------------------------------------

REDACTED = _redact.REDACTED
secret_values = _redact.secret_values


def scrub_secrets(data: Any, extra_secrets: Iterable[str] = ()) -> Any:
    """A copy of JSON-like ``data`` with secrets removed (see :func:`tracegen.redact.scrub`).

    Drops the value of any key that names a credential (api_key, token, secret, password, authorization...)
    and removes that value wherever else it occurs; strips user:password@ and query strings from URLs; and
    replaces OpenAI/HF-looking keys and the values of secret environment variables (OPENAI_API_KEY,
    HF_TOKEN, ...) plus ``extra_secrets`` wherever they occur.
    """
    return _redact.scrub(data, extra_secrets)


# ---- metadata ----------------------------------------------------------------------------------------------


def _config_yaml(cfg: Mapping[str, Any], default: bool) -> dict[str, Any]:
    data_dir = str(PurePosixPath(cfg["data_files"][0]).parent) if cfg["data_files"] else f"{cfg['name']}/data"
    entry: dict[str, Any] = {
        "config_name": cfg["name"],
        "data_files": [{"split": "train", "path": f"{data_dir}/train-*.parquet"}],
    }
    if default:
        entry["default"] = True
    return entry


def _features_yaml(features: Mapping[str, Any]) -> list[dict[str, Any]]:
    from .features import yaml_list  # datasets' own rules, without importing datasets

    return yaml_list(features)


def _info_yaml(cfg: Mapping[str, Any]) -> dict[str, Any]:
    num_bytes = int(cfg.get("num_bytes", 0))
    return {
        "config_name": cfg["name"],
        "features": _features_yaml(cfg["features"]),
        "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": int(cfg["rows"])}],
        "download_size": int(cfg.get("download_size", 0)),
        "dataset_size": num_bytes,
    }


def _selected(manifest: Mapping[str, Any], only: Iterable[str] | None) -> list[Mapping[str, Any]]:
    configs: list[Mapping[str, Any]] = list(manifest["configs"])
    if only is None:
        return configs
    wanted = set(only)
    return [c for c in configs if c["name"] in wanted]


def card_metadata(
    manifest: Mapping[str, Any],
    *,
    only: Iterable[str] | None = None,
    keep_configs: Sequence[Mapping[str, Any]] = (),
    keep_infos: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The card's YAML metadata for an export manifest.

    ``only`` limits the configs; ``keep_configs`` / ``keep_infos`` are ``configs`` / ``dataset_info`` entries
    of other configs already on the Hub that a push must keep listing.
    """
    options = CardOptions.from_dict(manifest.get("card"))
    configs = _selected(manifest, only)
    rows = rows_of(configs)
    tags = list(dict.fromkeys([*BASE_TAGS, *options.extra_tags]))
    meta: dict[str, Any] = {"license": options.license}
    if options.license == "other":
        if options.license_name:
            meta["license_name"] = options.license_name
        if options.license_link:
            meta["license_link"] = options.license_link
    kept = [dict(k) for k in keep_configs]
    names = [c["name"] for c in configs]
    default = manifest.get("default_config")
    if default not in names:  # the export's default is not pushed: keep a remote default, else our first
        default = None if any(k.get("default") for k in kept) else (names[0] if names else None)
    if default is not None:
        for k in kept:
            k.pop("default", None)
    meta |= {
        "language": list(options.language),
        "task_categories": list(options.task_categories),
        "size_categories": [size_category(rows)],
        "tags": tags,
        "pretty_name": options.pretty_name or _pretty_name(manifest),
        "configs": [_config_yaml(c, default=c["name"] == default) for c in configs] + kept,
        "dataset_info": [_info_yaml(c) for c in configs] + [dict(k) for k in keep_infos],
    }
    return meta


def rows_of(configs: Sequence[Mapping[str, Any]]) -> int:
    """Rows in a set of exported configs: per format summed over stages, then the largest format."""
    per_format: dict[str, int] = {}
    for c in configs:
        per_format[c.get("format", c["name"])] = per_format.get(c.get("format", c["name"]), 0) + int(
            c["rows"]
        )
    return max(per_format.values(), default=0)


def _teacher(manifest: Mapping[str, Any]) -> str:
    config = manifest.get("run", {}).get("config") or {}
    models = [m["model"] for m in manifest.get("tally", {}).get("by_model", []) if m.get("model")]
    return ", ".join(dict.fromkeys(models)) or str(config.get("model") or "a teacher model")


FAKE_MODEL_PREFIX = "tracegen-fake:"


def _rehearsal_warning(manifest: Mapping[str, Any]) -> list[str]:
    """A loud note when answers came from tracegen's fake server (a rehearsal): they are not model outputs."""
    returned = [str(m.get("model_returned") or "") for m in manifest.get("tally", {}).get("by_model", [])]
    if not any(r.startswith(FAKE_MODEL_PREFIX) for r in returned):
        return []
    return [
        "> **Rehearsal data — not real model outputs.** The responses of this dataset were produced by "
        "tracegen's built-in fake OpenAI server (`--rehearse`; model names `tracegen-fake:…`): they are "
        "synthetic filler for testing the pipeline and must not be used for training.",
        "",
    ]


def _pretty_name(manifest: Mapping[str, Any]) -> str:
    return f"Orca-style explanation traces ({_teacher(manifest)}, tracegen)"


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


def render_card(
    manifest: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    only: Iterable[str] | None = None,
    keep_configs: Sequence[Mapping[str, Any]] = (),
    keep_infos: Sequence[Mapping[str, Any]] = (),
) -> str:
    """README.md for an export manifest (``export.json``); ``repo_id`` fills in the loading snippet."""
    safe: Mapping[str, Any] = scrub_secrets(manifest)
    options = CardOptions.from_dict(safe.get("card"))
    meta = card_metadata(safe, only=only, keep_configs=keep_configs, keep_infos=keep_infos)
    configs = _selected(safe, only)
    rows = rows_of(configs)
    body = [
        f"# {meta['pretty_name']}",
        "",
        f"{rows:,} Orca-style explanation traces (Mukherjee et al. 2023): FLAN v2 prompts paired with Orca's "
        f"system messages and answered step by step by {_teacher(safe)}. Generated with "
        f"[tracegen](https://pypi.org/project/tracegen/) {safe.get('tracegen_version', __version__)}.",
        "",
        *_rehearsal_warning(safe),
        *_configs_section(safe, configs),
        *_load_section(configs, repo_id),
        *_generation_section(safe),
        *_composition_section(safe),
        *_spend_section(safe),
        *_cleaning_section(safe),
        *_decontamination_section(safe),
        *_license_section(options),
        "## Citation",
        "",
        _CITATION,
        "",
    ]
    return _dump(meta, BEGIN + "\n\n" + "\n".join(body) + "\n" + END + "\n")


BEGIN = "<!-- tracegen:begin — generated from the run; edits between these markers are replaced on push -->"
END = "<!-- tracegen:end -->"
_UNION_KEYS = ("language", "task_categories", "tags")
_OURS_KEYS = ("configs", "dataset_info", "size_categories")


def _dump(meta: Mapping[str, Any], body: str) -> str:
    front = yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True, width=1000)
    return _redact.redact(f"---\n{front}---\n\n{body}")  # the whole card, last: nothing secret leaves


def merge_card(remote: str, ours: str, options: CardOptions) -> str:
    """Update a card already on the Hub with a newly rendered one, keeping what people added there.

    Metadata: ``configs`` / ``dataset_info`` / ``size_categories`` are ours; ``language``, ``task_categories``
    and ``tags`` are merged; any other key already on the Hub (license, pretty_name, gating, ...) is kept
    unless the export set it explicitly (a non-default license, a pretty_name). Body: the part between the
    tracegen markers is replaced and text around it kept; a card without markers is kept and ours appended.
    """
    remote_meta, remote_body = split_card(remote)
    our_meta, our_body = split_card(ours)
    explicit = {"pretty_name"} if options.pretty_name else set()
    if options.license != DEFAULT_LICENSE:
        explicit |= {"license", "license_name", "license_link"}
    meta: dict[str, Any] = {}
    for key in [*our_meta, *(k for k in remote_meta if k not in our_meta)]:
        if key in _UNION_KEYS and isinstance(remote_meta.get(key), list):
            meta[key] = list(dict.fromkeys([*remote_meta[key], *our_meta.get(key, [])]))
        elif key in _OURS_KEYS or key in explicit or key not in remote_meta:
            meta[key] = our_meta.get(key, remote_meta.get(key))
        else:
            meta[key] = remote_meta[key]
    if options.license != DEFAULT_LICENSE and "license_name" not in our_meta:
        meta.pop("license_name", None)
        meta.pop("license_link", None)
    managed = our_body[our_body.index(BEGIN) :].rstrip("\n") + "\n"
    start, end = remote_body.find(BEGIN), remote_body.find(END)
    if start >= 0 and end > start:
        body = remote_body[:start] + managed.rstrip("\n") + remote_body[end + len(END) :]
    elif remote_body.strip():
        body = remote_body.rstrip("\n") + "\n\n" + managed
    else:
        body = managed
    return _dump(meta, body.lstrip("\n"))


# ---- validation --------------------------------------------------------------------------------------------


def split_card(content: str) -> tuple[dict[str, Any], str]:
    """(YAML metadata, body) of a card; ConfigError when there is no valid YAML block."""
    match = _YAML_BLOCK.search(content)
    if match is None:
        raise ConfigError("dataset card has no YAML metadata block (--- ... --- at the top)")
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as e:
        raise ConfigError(f"dataset card YAML is invalid: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("dataset card YAML must be a mapping of key: value")
    return data, content[match.end() :]


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def validate_card(content: str, *, root: str | Path | None = None) -> dict[str, Any]:
    """Check a dataset card offline the way the Hub and ``datasets`` read it; return its metadata.

    Parses it with huggingface_hub (DatasetCard / DatasetCardData) and ``datasets`` (configs, dataset_info),
    checks the license id, size bucket and list-typed keys, and with ``root`` that every config's
    ``data_files`` pattern matches files under that folder. Raises ConfigError listing the problems.
    """
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    meta, _ = split_card(content)
    problems: list[str] = []
    try:
        card = DatasetCard(content)
        MetadataConfigs.from_dataset_card_data(card.data)
        DatasetInfosDict.from_dataset_card_data(card.data)
    except Exception as e:  # the libraries raise ValueError, TypeError, KeyError... on bad metadata
        problems.append(f"huggingface_hub/datasets cannot read the metadata: {e}")
    licenses = meta.get("license")
    for lic in licenses if isinstance(licenses, list) else [licenses]:
        if lic is not None and lic not in HUB_LICENSES:
            problems.append(f"license {lic!r} is not a Hub license id")
    buckets = {name for name, _ in SIZE_CATEGORIES}
    for key in ("language", "task_categories", "tags", "size_categories"):
        if key in meta and not _is_str_list(meta[key]):
            problems.append(f"{key} must be a list of strings")
    for size in meta.get("size_categories") or []:
        if size not in buckets and size != "other":
            problems.append(f"size_categories {size!r} is not one of the Hub's buckets")
    if "pretty_name" in meta and not isinstance(meta["pretty_name"], str):
        problems.append("pretty_name must be a string")
    if root is not None:
        problems += _missing_data_files(meta, Path(root))
    if problems:
        raise ConfigError("invalid dataset card: " + "; ".join(problems))
    return meta


def _missing_data_files(meta: Mapping[str, Any], root: Path) -> list[str]:
    out = []
    for cfg in meta.get("configs") or []:
        for spec in cfg.get("data_files") or []:
            paths = spec.get("path") if isinstance(spec, Mapping) else spec
            for pattern in paths if isinstance(paths, list) else [paths]:
                if not list(root.glob(str(pattern))):
                    out.append(f"config {cfg.get('config_name')!r}: no file matches {pattern!r}")
    return out
