"""What the fake Hub's ``/api/validate-yaml`` enforces on a card's metadata (:func:`check_card_metadata`)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..publish.card_meta import HUB_LICENSES, SIZE_CATEGORIES
from .fake_hub_repos import _YAML_BLOCK

_TASKS = """text-generation question-answering text-classification token-classification summarization
    translation
    text2text-generation fill-mask zero-shot-classification sentence-similarity feature-extraction
    table-question-answering multiple-choice conversational text-retrieval other"""
_KNOWN_TASKS = frozenset(_TASKS.split())
_LIST_KEYS = (
    "tags",
    "task_categories",
    "task_ids",
    "size_categories",
    "annotations_creators",
    "language_creators",
    "multilinguality",
    "source_datasets",
    "language_details",
)


def _str_or_list(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value))


def _check_data_files(where: str, value: Any, errors: list[str]) -> None:
    if _str_or_list(value):
        return
    if not isinstance(value, list):
        errors.append(f'"{where}.data_files" must be a string or an array')
        return
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("split"), str)
            or not _str_or_list(item.get("path"))
        ):
            errors.append(f'"{where}.data_files" items must be {{split: string, path: string | string[]}}')
            return


def _check_configs(value: Any, errors: list[str]) -> None:
    if not isinstance(value, list):
        errors.append('"configs" must be an array')
        return
    seen: set[str] = set()
    for i, cfg in enumerate(value):
        where = f"configs[{i}]"
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
            errors.append(f'"{where}.config_name" is required and must be a string')
            continue
        if cfg["config_name"] in seen:
            errors.append(f'"{where}.config_name" {cfg["config_name"]!r} is duplicated')
        seen.add(cfg["config_name"])
        if "data_files" in cfg:
            _check_data_files(where, cfg["data_files"], errors)
        if "data_dir" in cfg and not isinstance(cfg["data_dir"], str):
            errors.append(f'"{where}.data_dir" must be a string')
        if "default" in cfg and not isinstance(cfg["default"], bool):
            errors.append(f'"{where}.default" must be a boolean')


def _check_dataset_info(value: Any, errors: list[str]) -> None:
    infos = value if isinstance(value, list) else [value]
    for i, info in enumerate(infos):
        where = f"dataset_info[{i}]" if isinstance(value, list) else "dataset_info"
        if not isinstance(info, dict):
            errors.append(f'"{where}" must be an object')
            continue
        if "features" in info and not isinstance(info["features"], (list, dict)):
            errors.append(f'"{where}.features" must be an array')
        for split in info.get("splits") or []:
            if not isinstance(split, dict) or not isinstance(split.get("name"), str):
                errors.append(f'"{where}.splits" items need a string "name"')
            elif any(k in split and not isinstance(split[k], int) for k in ("num_bytes", "num_examples")):
                errors.append(f'"{where}.splits" num_bytes / num_examples must be integers')


def check_card_metadata(content: str, repo_type: str = "dataset") -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's YAML metadata, the checks ``/api/validate-yaml`` makes."""
    match = _YAML_BLOCK.search(content)
    if match is None:
        return [], ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(match.group(2))
    except yaml.YAMLError as e:
        return [f"Invalid YAML in metadata: {e}"], []
    if meta is None:
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML object (key: value)"], []
    errors: list[str] = []
    warnings: list[str] = []
    lic = meta.get("license")
    if lic is not None and not (
        (isinstance(lic, str) and lic in HUB_LICENSES)
        or (isinstance(lic, list) and lic and all(isinstance(x, str) and x in HUB_LICENSES for x in lic))
    ):
        errors.append('"license" must be one of [' + ", ".join(sorted(HUB_LICENSES)) + "]")
    if "language" in meta:
        langs = meta["language"]
        if not _str_or_list(langs):
            errors.append('"language" must be a string or an array of strings')
        else:
            for lang in [langs] if isinstance(langs, str) else langs:
                if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)*|code|multilingual", lang):
                    errors.append(f'"language" {lang!r} is not an ISO 639-1/2/3 code')
    for key in _LIST_KEYS:
        if key in meta and not _str_or_list(meta[key]):
            errors.append(f'"{key}" must be an array of strings')
    buckets = {name for name, _ in SIZE_CATEGORIES} | {"other"}
    sizes = meta.get("size_categories")
    for size in [sizes] if isinstance(sizes, str) else sizes if isinstance(sizes, list) else []:
        if size not in buckets:
            errors.append(
                f'"size_categories" must be one of [{", ".join(n for n, _ in SIZE_CATEGORIES)}, other]'
            )
    tasks = meta.get("task_categories")
    for task in [tasks] if isinstance(tasks, str) else tasks if isinstance(tasks, list) else []:
        if isinstance(task, str) and task not in _KNOWN_TASKS:
            warnings.append(f'"task_categories" {task!r} is not a known task category')
    for key in ("pretty_name", "license_name", "license_link", "paperswithcode_id"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    if "configs" in meta:
        _check_configs(meta["configs"], errors)
    if "dataset_info" in meta:
        _check_dataset_info(meta["dataset_info"], errors)
    if repo_type not in ("dataset", "model", "space"):
        errors.append(f'"repoType" must be one of dataset, model, space, not {repo_type!r}')
    return errors, warnings
