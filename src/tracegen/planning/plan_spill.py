"""The plan's temporary SQLite spill file: the candidate table (``cand``) and the plan table (``plan``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..records import Record

if TYPE_CHECKING:
    from .plan_pass import _Classified

_SPILL_BATCH = 1000


def _prepare_db(con: sqlite3.Connection) -> None:
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-32768")  # 32 MiB of pages: inserts and the index build read less back
    con.execute(
        "CREATE TABLE cand (seq INTEGER PRIMARY KEY, tid INTEGER NOT NULL, rank INTEGER NOT NULL, "
        "label TEXT NOT NULL, submix TEXT, idx INTEGER, question TEXT, target TEXT, task_name TEXT, "
        "template_type TEXT, source TEXT, message_id INTEGER, system_prompt TEXT, train_system_prompt TEXT)"
    )
    con.execute(
        "CREATE TABLE plan (pos INTEGER PRIMARY KEY, label TEXT NOT NULL, "
        + ", ".join(_PLAN_COLUMNS)
        + ")"
    )


#: The Record fields a planned row sets, stored as plain columns: its JSON text is made once, when written.
_PLAN_COLUMNS = (
    "id",
    "submix",
    "question",
    "system_prompt",
    "system_message_id",
    "train_system_prompt",
    "task_name",
    "template_type",
    "target",
    "key",
    "prompt_tokens",
    "source",
)
_INSERT_PLAN = "INSERT INTO plan VALUES (" + ", ".join("?" * (2 + len(_PLAN_COLUMNS))) + ")"
_SELECT_PLAN = "SELECT pos, label, " + ", ".join(_PLAN_COLUMNS) + " FROM plan ORDER BY pos"


def _plan_row(pos: int, label: str, record: Record) -> tuple[Any, ...]:
    return (pos, label, *[getattr(record, name) for name in _PLAN_COLUMNS])


def _plan_record(values: tuple[Any, ...]) -> Record:
    return Record(**dict(zip(_PLAN_COLUMNS, values, strict=True)))


_CandRow = tuple[int, int, int, str, str, int, str, str, str, str, str, "int | None", str, "str | None"]
_INSERT_CAND = "INSERT OR IGNORE INTO cand VALUES (" + ", ".join("?" * 14) + ")"


def _cand_row(item: _Classified, seq: int, tid: int, rank: int) -> _CandRow:
    """A candidate as plain columns (a Record is built only for the rows the plan takes)."""
    row, choice = item.row, item.choice
    return (
        seq,
        tid,
        rank,
        choice.label,
        row.submix,
        item.index,
        row.question,
        row.target,
        row.task_name,
        row.template_type,
        row.where,
        choice.system_message_id,
        choice.system_prompt,
        choice.train_system_prompt,
    )


def _cand_record(values: tuple[Any, ...]) -> Record:
    (submix, idx, question, target, task_name, template_type, source, message_id, system, train) = values
    return Record(
        id=f"{submix}.{idx}",
        submix=submix,
        question=question,
        system_prompt=system,
        system_message_id=message_id,
        train_system_prompt=train,
        task_name=task_name,
        template_type=template_type,
        target=target,
        source=source,
    )


def _lowest_ranked(con: sqlite3.Connection, tid: int, k: int, keep: Any) -> list[int]:
    """The ``k`` lowest-ranked candidates of task ``tid`` that dedup kept (fewer if it has fewer)."""
    out: list[int] = []
    for (seq,) in con.execute("SELECT seq FROM cand WHERE tid = ? ORDER BY rank", (tid,)):
        if keep[seq]:
            out.append(seq)
            if len(out) == k:
                break
    return out


def _scan(con: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    """Every candidate, in source order, read in chunks (the plan table is written meanwhile)."""
    last = -1
    while True:
        rows = con.execute(
            "SELECT seq, label, submix, idx, question, target, task_name, template_type, source, message_id, "
            "system_prompt, train_system_prompt FROM cand WHERE seq > ? ORDER BY seq LIMIT ?",
            (last, _SPILL_BATCH),
        ).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]
