"""Tiny replicas of the public FLAN v2 layouts, for the fake Hub (tests, rehearsals, benchmarks).

* :func:`open_orca_flan_files`: ``Open-Orca/FLAN`` — 14 folders (:data:`~tracegen.planning.sources.OPEN_ORCA_FLAN_LAYOUT`),
  each of ``part.N.parquet`` files with the seqio columns ``inputs``, ``targets``, ``_template_idx``,
  ``_task_source``, ``_task_name``, ``_template_type``;
* :func:`submix_original_files`: one ``*_submix_original`` repository (``conceptofmind/…`` or
  ``DataProvenanceInitiative/…``) — ``data/train-0000K-of-0000N-<hash>.parquet`` with ``inputs``,
  ``targets``, ``task_source``, ``task_name``, ``template_type``, and a README with ``configs``.

Rows are generated (nothing copied from FLAN): a few tasks per submix, Flan2021 multiple-choice rows rendered
by FLAN's option rule (:mod:`tracegen.planning.flan_options`), some of them in ``*_noopt`` folders.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from typing import Any

from ..planning.flan_options import END_STRINGS, ITEM_STYLES, OPTION_STARTS, render_options
from ..planning.sources import OPEN_ORCA_FLAN_LAYOUT

__all__ = ["SUBMIX_REPOS", "open_orca_flan_files", "parquet_bytes", "submix_original_files"]

#: submix name in the repo id -> (task_source value, task names)
SUBMIX_REPOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cot": ("CoT", ("cot_gsm8k", "cot_esnli", "cot_creak")),
    "niv2": ("NIv2", ("task001_quoref_question_generation", "task1001_count_words", "task190_snli")),
    "flan2021": ("Flan2021", ("glue/rte:2.0.0", "super_glue/copa:1.0.2", "gigaword:1.2.0", "ag_news:3.0.0")),
    "t0": ("P3", ("adversarial_qa_dbert_answer_the_following_q", "wiki_qa_found_on_google", "bigbench_x")),
    "dialog": ("Dialog", ("wiki_dialog", "qrecc")),
}
_FOLDER_SUBMIX = {"cot": "cot", "niv2": "niv2", "flan": "flan2021", "t0": "t0", "dialog": "dialog"}


def parquet_bytes(rows: list[dict[str, Any]], row_group_size: int = 64) -> bytes:
    """``rows`` as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=row_group_size)
    return buf.getvalue()


def _rows(submix: str, templates: tuple[str, ...], n: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    source, tasks = SUBMIX_REPOS[submix]
    for i in range(n):
        template = templates[i % len(templates)]
        task = tasks[i // len(templates) % len(tasks)]
        question = f"{submix} {template} question {i} about {task}: what follows from the text?"
        target = "yes"
        if submix == "flan2021" and i % 2 == 0:  # multiple choice, as FLAN renders options
            start = OPTION_STARTS[i // 2 % len(OPTION_STARTS)]
            style = rng.choice(ITEM_STYLES)
            question += "\n" + render_options(["yes", "no", "maybe"], start, style, rng.choice(END_STRINGS))
        yield {"inputs": question, "targets": target, "source": source, "task": task, "template": template}


def open_orca_flan_files(rows_per_folder: int = 24, *, seed: int = 0, parts: int = 2) -> dict[str, bytes]:
    """The files of an ``Open-Orca/FLAN`` replica: 14 folders of ``part.N.parquet`` (underscore columns)."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {"README.md": b"---\nlicense: cc-by-4.0\n---\n# FLAN (replica)\n"}
    for folder in OPEN_ORCA_FLAN_LAYOUT:
        head, template = folder.rsplit("_", 2)[0], folder.rsplit("_", 2)[1]
        template = template[:2] + "_" + template[2:]  # zsopt -> zs_opt
        rows = [
            {
                "inputs": r["inputs"],
                "targets": r["targets"],
                "_template_idx": k % 10,
                "_task_source": r["source"],
                "_task_name": r["task"],
                "_template_type": template,
            }
            for k, r in enumerate(_rows(_FOLDER_SUBMIX[head], (template,), rows_per_folder, rng))
        ]
        step = -(-len(rows) // parts)
        for p in range(parts):
            files[f"{folder}/part.{p}.parquet"] = parquet_bytes(rows[p * step : (p + 1) * step])
    return files


def submix_original_files(submix: str, rows: int = 60, *, seed: int = 0, shards: int = 2) -> dict[str, bytes]:
    """The files of a ``{submix}_submix_original`` replica: ``data/train-*.parquet`` and a README."""
    rng = random.Random(seed)
    templates = ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")
    out = [
        {
            "inputs": r["inputs"],
            "targets": r["targets"],
            "task_source": r["source"],
            "task_name": r["task"],
            "template_type": r["template"],
        }
        for r in _rows(submix, templates, rows, rng)
    ]
    files: dict[str, bytes] = {
        "README.md": (
            "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
            f"---\n# {submix}_submix_original (replica)\n"
        ).encode()
    }
    step = -(-len(out) // shards)
    for k in range(shards):
        digest = hashlib.sha1(f"{submix}{k}".encode()).hexdigest()[:16]
        files[f"data/train-{k:05d}-of-{shards:05d}-{digest}.parquet"] = parquet_bytes(
            out[k * step : (k + 1) * step]
        )
    return files
