"""Where the plan keeps its candidates and chosen rows while it is built (:class:`_Store`): in memory while
they are few, else a temporary SQLite file with the candidate table (``cand``) and the plan table (``plan``).

A small source's plan never touches SQLite (its inserts, index and queries were a tenth of planning 5,000
requests); past :data:`MEMORY_ROWS` candidates (or :data:`MEMORY_CHARS` characters of their text) the rows
move to the file, so a source of millions of rows plans in bounded memory. Both give the same rows in the same order.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..records import Record, content_key

if TYPE_CHECKING:  # sqlite3 is imported where the file is opened: most plans never touch it
    import sqlite3

    from .plan_pass import _Classified

_SPILL_BATCH = 1000
#: Candidates kept in memory; past this many, or past MEMORY_CHARS characters of their questions and
#: targets, the store moves to its SQLite file.
MEMORY_ROWS = 50_000
MEMORY_CHARS = 16 * 2**20


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
        "CREATE TABLE plan (pos INTEGER PRIMARY KEY, label TEXT NOT NULL, " + ", ".join(_PLAN_COLUMNS) + ")"
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


def _plan_values(
    cand: Sequence[Any], prompt_tokens: int
) -> tuple[str, str, str, str, int | None, str | None, str, str, str, str, int, str]:
    """:data:`_PLAN_COLUMNS` of the Record a candidate (``_cand_record``'s columns) becomes, built directly."""
    (submix, idx, question, target, task_name, template_type, source, message_id, system, train) = cand
    key = content_key(system, question)
    return (
        f"{submix}.{idx}",
        submix,
        question,
        system,
        message_id,
        train,
        task_name,
        template_type,
        target,
        key,
        prompt_tokens,
        source,
    )


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


_CAND_COLUMNS = "submix, idx, question, target, task_name, template_type, source"
_SCAN_COLUMNS = "seq, label, " + _CAND_COLUMNS + ", message_id, system_prompt, train_system_prompt"


_first, _second, _question, _target = (operator.itemgetter(i) for i in (0, 1, 6, 7))


class _Store:
    """The candidates (``_CandRow``) and the chosen rows (plan position, label, :data:`_PLAN_COLUMNS`)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._con: sqlite3.Connection | None = None
        self._cand: dict[int, _CandRow] = {}
        self._by_task: dict[int, list[tuple[int, int]]] = {}
        """tid -> [(rank, seq)]: the candidate index of the memory store."""
        self._unsorted: set[int] = set()
        self._plan: list[tuple[Any, ...]] = []
        self._chars = 0
        self._indexed = False
        self.on_file = False
        """Whether the rows moved to the SQLite file."""

    def _to_file(self) -> sqlite3.Connection:
        import sqlite3

        con = sqlite3.connect(self.db_path)
        _prepare_db(con)
        rows = list(self._cand.values())
        for start in range(0, len(rows), _SPILL_BATCH):
            con.executemany(_INSERT_CAND, rows[start : start + _SPILL_BATCH])
        if self._indexed:
            con.execute("CREATE INDEX cand_task ON cand (tid, rank)")
        self._cand, self._by_task, self._unsorted = {}, {}, set()
        self._con, self.on_file = con, True
        return con

    def add_candidates(self, rows: list[_CandRow]) -> None:
        """Add candidates (distinct ``seq``s); one whose ``seq`` is already there is left as it is."""
        if self._con is not None:
            self._con.executemany(_INSERT_CAND, rows)
            return
        cand, by_task = self._cand, self._by_task
        new = [row for row in rows if row[0] not in cand]
        cand.update(zip(map(_first, new), new, strict=True))
        for seq, tid, rank, *_ in new:
            by_task.setdefault(tid, []).append((rank, seq))
        self._unsorted.update(map(_second, new))
        self._chars += sum(map(len, map(_question, new))) + sum(map(len, map(_target, new)))
        if len(cand) > MEMORY_ROWS or self._chars > MEMORY_CHARS:
            self._to_file()

    def index(self) -> None:
        """Done adding the first pass's candidates: index them by (task, rank)."""
        self._indexed = True
        if self._con is not None:
            self._con.execute("CREATE INDEX cand_task ON cand (tid, rank)")

    def lowest_ranked(self, tid: int, k: int, keep: Any) -> list[int]:
        """The ``k`` lowest-ranked candidates of task ``tid`` that dedup kept (fewer if it has fewer)."""
        if self._con is not None:
            ranked: Any = self._con.execute("SELECT seq FROM cand WHERE tid = ? ORDER BY rank", (tid,))
        else:
            if tid in self._unsorted:
                self._by_task[tid].sort()
                self._unsorted.discard(tid)
            ranked = ((seq,) for _rank, seq in self._by_task.get(tid, ()))
        out: list[int] = []
        for (seq,) in ranked:
            if keep[seq]:
                out.append(seq)
                if len(out) == k:
                    break
        return out

    def candidates(self, seqs: list[int]) -> list[tuple[Any, ...]]:
        """(submix, idx, question, target, task_name, template_type, source) of the candidates ``seqs`` that
        exist, in source order."""
        if self._con is not None:
            query = (
                f"SELECT {_CAND_COLUMNS} FROM cand WHERE seq IN ({','.join('?' * len(seqs))}) ORDER BY seq"
            )
            return self._con.execute(query, seqs).fetchall()
        return [self._cand[seq][4:11] for seq in sorted(seqs) if seq in self._cand]

    def scan(self) -> Iterator[tuple[Any, ...]]:
        """Every candidate as (seq, label, submix, idx, question, target, task_name, template_type, source,
        message_id, system_prompt, train_system_prompt), in source order, read in chunks from the file."""
        if self._con is None:
            for seq in sorted(self._cand):
                row = self._cand[seq]
                yield (seq, *row[3:])
            return
        last = -1
        while True:
            rows = self._con.execute(
                f"SELECT {_SCAN_COLUMNS} FROM cand WHERE seq > ? ORDER BY seq LIMIT ?", (last, _SPILL_BATCH)
            ).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    def add_plan(self, rows: list[tuple[Any, ...]]) -> None:
        """Add chosen rows: (plan position, label, :data:`_PLAN_COLUMNS` values)."""
        if self._con is not None:
            self._con.executemany(_INSERT_PLAN, rows)
        else:
            self._plan.extend(rows)

    def finish(self) -> None:
        """Done building: the candidates are dropped (memory) or the file committed."""
        self._cand, self._by_task, self._unsorted = {}, {}, set()
        self._plan.sort(key=lambda row: row[0])
        if self._con is not None:
            self._con.commit()

    def close(self) -> None:
        """Close the file's build connection (the plan rows stay readable)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def plan_rows(self) -> Iterator[tuple[Any, ...]]:
        """The chosen rows in plan order (each call reads them afresh)."""
        if not self.on_file:
            yield from self._plan
            return
        import sqlite3

        con = sqlite3.connect(self.db_path)
        try:
            yield from con.execute(_SELECT_PLAN)
        finally:
            con.close()
