"""The card's YAML metadata and options: licenses, size buckets, :class:`CardOptions`, secret scrubbing
and :func:`card_metadata` (:mod:`tracegen.publish.card` renders the whole card).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from .. import redact as _redact
from ..errors import ConfigError

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
