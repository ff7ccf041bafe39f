"""tracegen.features spells the export formats' features as datasets does, without importing datasets."""

from __future__ import annotations

from typing import Any

import datasets
import pytest

from tracegen.publish.export import FORMATS, features_for
from tracegen.publish.features import Features, List, Value, yaml_list


def _as_datasets(features: Features) -> datasets.Features:
    """The same columns built with datasets' own classes."""

    def conv(f: Any) -> Any:
        if isinstance(f, Value):
            return datasets.Value(f.dtype)
        if isinstance(f, List):
            return datasets.List(conv(f.feature))
        return {k: conv(v) for k, v in f.items()}

    return datasets.Features({k: conv(v) for k, v in features.items()})


EXTRA = {
    "nested": Features(
        {
            "n": Value("int32"),
            "flags": List(Value("bool")),
            "turns": List({"from": Value("string"), "meta": {"w": Value("float64")}}),
            "point": {"x": Value("int64"), "y": Value("float64")},
        }
    )
}


@pytest.mark.parametrize("name", [*FORMATS, *EXTRA])
def test_same_dict_schema_and_yaml_as_datasets(name: str) -> None:
    ours = FORMATS[name].features if name in FORMATS else EXTRA[name]
    theirs = _as_datasets(ours)
    assert ours.to_dict() == theirs.to_dict()
    # the Parquet schema, metadata bytes included: exported files are byte-identical
    assert ours.arrow_schema.equals(theirs.arrow_schema, check_metadata=True)
    assert ours.arrow_schema.metadata == theirs.arrow_schema.metadata
    assert yaml_list(ours.to_dict()) == theirs._to_yaml_list()
    assert datasets.Features.from_dict(ours.to_dict()) == theirs
    if name in FORMATS:
        assert features_for(name) == theirs


def test_yaml_list_hands_other_types_to_datasets() -> None:
    other = datasets.Features(
        {"label": datasets.ClassLabel(names=["no", "yes"]), "t": datasets.Value("string")}
    )
    assert yaml_list(other.to_dict()) == other._to_yaml_list()
