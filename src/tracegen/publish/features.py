"""The Hugging Face ``datasets`` feature types of the export formats, without importing ``datasets``.

Export writes Parquet with pyarrow alone: ``datasets`` takes ~0.5 s to import and is needed only to read a
dataset back (or to stream a Hub source, or to push). The few feature kinds the formats use are spelled here
in ``datasets``' own serialised form (``Features.to_dict()``), the Arrow schema carries that form as
``datasets`` does (schema metadata ``huggingface``), and the card's YAML list is derived from it by the same
rules, so every file written is byte-identical to what ``datasets.Features(...)`` would give.
``tests/publish/test_features.py`` pins the equivalence against the installed ``datasets``.

    features = Features({"id": Value("string"), "turns": List({"from": Value("string")})})
    features.arrow_schema          # pyarrow.Schema with the huggingface metadata
    features.to_dict()             # == datasets.Features(...).to_dict()
    yaml_list(features.to_dict())  # == datasets.Features.from_dict(...)._to_yaml_list()
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyarrow as pa

__all__ = ["Feature", "Features", "List", "Value", "yaml_list"]


@dataclass(frozen=True)
class Value:
    """A scalar column: ``datasets.Value(dtype)`` (dtype: string, bool, int32, int64, float64, ...)."""

    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "_type": "Value"}

    def arrow_type(self) -> pa.DataType:
        return pa.type_for_alias(self.dtype)


@dataclass(frozen=True)
class List:
    """A list column: ``datasets.List(feature)``; ``feature`` is a Value or a struct (name -> feature)."""

    feature: Value | Mapping[str, Feature]

    def to_dict(self) -> dict[str, Any]:
        return {"feature": _to_dict(self.feature), "_type": "List"}

    def arrow_type(self) -> pa.DataType:
        return pa.list_(_arrow_type(self.feature))


Feature: TypeAlias = "Value | List | Mapping[str, Feature]"
"""A column's type: a Value, a List, or a struct given as a mapping of field name to feature."""


def _to_dict(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, (Value, List)):
        return feature.to_dict()
    return {name: _to_dict(sub) for name, sub in feature.items()}


def _arrow_type(feature: Feature) -> pa.DataType:
    if isinstance(feature, (Value, List)):
        return feature.arrow_type()
    return pa.struct([pa.field(name, _arrow_type(sub)) for name, sub in feature.items()])


class Features(dict[str, Feature]):
    """The columns of a dataset config, in order: ``datasets.Features`` for the kinds above."""

    def to_dict(self) -> dict[str, Any]:
        return {name: _to_dict(feature) for name, feature in self.items()}

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Parquet schema, carrying the features as ``datasets`` does (read back without guessing)."""
        metadata = {"huggingface": json.dumps({"info": {"features": self.to_dict()}})}
        return pa.schema([pa.field(name, _arrow_type(f)) for name, f in self.items()]).with_metadata(metadata)


_LIST_KEYS = ("large_list", "list", "sequence")


def yaml_list(features: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset card's ``dataset_info.features`` list for serialised features (``Features.to_dict()``).

    The rules of ``datasets.Features._to_yaml_list`` for Value, List, LargeList and structs; any other
    feature type is handed to ``datasets`` itself (imported only then).
    """
    try:
        return [{"name": name, **_yaml(feature)} for name, feature in features.items()]
    except _OtherType:
        import datasets

        out: list[dict[str, Any]] = datasets.Features.from_dict(dict(features))._to_yaml_list()
        return out


class _OtherType(Exception):
    """A feature type this module does not spell (ClassLabel, Image, ...)."""


def _simplify(feature: dict[str, Any]) -> dict[str, Any]:
    for key in _LIST_KEYS:
        inner = feature.get(key)
        if isinstance(inner, dict) and list(inner) == ["dtype"]:
            feature[key] = inner["dtype"]  # list: {dtype: string} -> list: string
        elif isinstance(inner, dict) and list(inner) == ["struct"]:
            feature[key] = inner["struct"]  # list: {struct: [...]} -> list: [...]
    return feature


def _yaml(feature: Any) -> dict[str, Any]:
    if not isinstance(feature, Mapping):
        raise _OtherType
    obj = dict(feature)
    kind = obj.pop("_type", None)
    if kind == "Value":
        return obj
    if kind in ("List", "LargeList"):
        inner = _yaml(obj.pop("feature"))
        return _simplify({"list" if kind == "List" else "large_list": inner, **obj})
    if kind is not None:
        raise _OtherType
    return {"struct": [{"name": name, **_yaml(sub)} for name, sub in obj.items()]}
