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

Parts: :mod:`.card_meta` (metadata, options, secret scrubbing), :mod:`.card_sections` (the body's sections);
this module renders, merges with the Hub's card and validates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import redact as _redact
from .._version import __version__
from ..errors import ConfigError
from .card_meta import (
    _YAML_BLOCK,
    DEFAULT_LICENSE,
    HUB_LICENSES,
    SIZE_CATEGORIES,
    CardOptions,
    _rehearsal_warning,
    _selected,
    _teacher,
    card_metadata,
    rows_of,
    scrub_secrets,
    secret_values,
    size_category,
)
from .card_meta import BASE_TAGS as BASE_TAGS
from .card_meta import FAKE_MODEL_PREFIX as FAKE_MODEL_PREFIX
from .card_meta import REDACTED as REDACTED
from .card_sections import (
    _CITATION,
    _cleaning_section,
    _composition_section,
    _configs_section,
    _decontamination_section,
    _generation_section,
    _license_section,
    _load_section,
    _spend_section,
)

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
