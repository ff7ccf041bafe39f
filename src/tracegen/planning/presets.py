"""Source presets: the Hub datasets that ``flan-v2``, ``flan-v2-dpi`` and ``open-orca-flan`` read.

See :mod:`tracegen.planning.sources` for what each preset means.
"""

from __future__ import annotations

__all__ = [
    "FLAN_V2_DPI_PRESET",
    "FLAN_V2_PRESET",
    "OPEN_ORCA_FLAN_FOLDERS",
    "OPEN_ORCA_FLAN_LAYOUT",
    "PRESETS",
]

#: The published FLAN v2 collection, one Hub dataset per submix (Dialog is not used by Orca).
FLAN_V2_PRESET: tuple[str, ...] = (
    "conceptofmind/cot_submix_original",
    "conceptofmind/niv2_submix_original",
    "conceptofmind/flan2021_submix_original",
    "conceptofmind/t0_submix_original",
)
#: The Data Provenance Initiative's copies of the same submixes (same files and columns).
FLAN_V2_DPI_PRESET: tuple[str, ...] = tuple(
    "DataProvenanceInitiative/" + repo_id.split("/", 1)[1] for repo_id in FLAN_V2_PRESET
)
#: Open-Orca/FLAN (the whole collection as parquet): its 14 folders, each of ``part.N.parquet`` files.
OPEN_ORCA_FLAN_LAYOUT: tuple[str, ...] = (
    "cot_zsopt_data",
    "cot_fsopt_data",
    "niv2_zsopt_data",
    "niv2_fsopt_data",
    "flan_zsopt_data",
    "flan_fsopt_data",
    "flan_zsnoopt_data",
    "flan_fsnoopt_data",
    "t0_zsopt_data",
    "t0_fsopt_data",
    "t0_zsnoopt_data",
    "t0_fsnoopt_data",
    "dialog_zsopt_data",
    "dialog_fsopt_data",
)
#: What the ``open-orca-flan`` preset reads: the zero-shot folders, Dialog left out.
OPEN_ORCA_FLAN_FOLDERS: tuple[str, ...] = tuple(
    f for f in OPEN_ORCA_FLAN_LAYOUT if "_zs" in f and not f.startswith("dialog")
)
PRESETS: dict[str, tuple[str, ...]] = {"flan-v2": FLAN_V2_PRESET, "flan-v2-dpi": FLAN_V2_DPI_PRESET}
