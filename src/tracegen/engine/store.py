"""Run-directory IO for the engine: durable results, resume, manifest check, stats.

Durability. An answer counts as done only once its line is written *and fsynced*. A single writer task does
group commit: lines queue up while the previous batch is being written and fsynced in a worker thread, so
one fsync covers every line that arrived meanwhile (throughput is not one fsync per line). Each producer
awaits the future of its own line. On a write error (ENOSPC, EIO, permissions) the file is truncated back
to its last durable size -- no half-written line is left -- and every pending and later write fails with
:class:`RunDirError`, which stops the run.

Lines the engine writes begin with ``{"request_key":"<64 hex>","cost_usd":<float>,`` so a resume reads the
done set of a multi-GB traces.jsonl without parsing every record. The cache key is the request's content
(model, messages, temperature, top_p, max_tokens), never code. A torn last line (kill -9 mid-write) is
truncated away on open. Done = in traces.jsonl, or rejected at the "generate" stage (content_filter: paid
for, not to be paid again). failed.jsonl is retried on rerun; it is compacted at a clean end (last entry per
key, keys since done dropped); after a crash, readers should take the last entry per ``request_key``.

Manifest. :meth:`RunDir.open` writes manifest.json on first use. On reuse, once the directory has spent money
(ledger, answers or Batch API jobs), it refuses a changed plan parameter or teacher setting with
:class:`~tracegen.errors.SettingChangedError`, naming the field and both ways out; before any spend the new
settings simply replace the old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from .._version import __version__
from ..errors import RunDirError, SettingChangedError
from ..records import Record
from ..redact import scrub
from ..rundir import RunPaths, atomic_write_bytes, fsync_dir, open_nofollow, open_read, truncate_durably
from ._json import dumps, loads
from .budget import utc_now_iso

__all__ = [
    "TEACHER_FIELDS",
    "DoneSet",
    "ResultWriter",
    "RunDir",
    "answer_line",
    "failed_line",
    "money_spent",
]

#: Config fields that decide what the teacher answers: changing them mixes two datasets in one directory.
TEACHER_FIELDS: tuple[str, ...] = ("model", "base_url", "temperature", "top_p", "max_tokens")

#: The base_url a rehearsal (``--rehearse``) pins in the manifest, so fake answers never mix with real ones.
REHEARSAL_BASE_URL = "tracegen-rehearsal (built-in fake server)"

_PREFIX = b'{"request_key":"'
_COST_AT = len(_PREFIX) + 64
_COST_PREFIX = b'","cost_usd":'

#: Which file a ResultWriter line goes to.
TRACES, FAILED, REJECTED = 0, 1, 2

_RECORD_FIELDS = tuple(f.name for f in fields(Record))

# Indirection so tests can simulate a full disk.
_os_write = os.write


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


def _fix_hint(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space (or choose another --output-dir), then rerun the same command to resume"
    return "fix the directory's permissions or choose another --output-dir, then rerun the same command"


def key_digest(request_key: str) -> bytes:
    """The in-memory form of a request key in the done set (16 bytes: ~3x smaller than the hex string)."""
    return bytes.fromhex(request_key[:32])


@dataclass(slots=True)
class DoneSet:
    """What a run directory already holds: request keys answered (or rejected at generate) and their cost."""

    keys: set[bytes]
    n_traces: int
    n_rejected: int
    cost_usd: float

    def __contains__(self, request_key: str) -> bool:
        return key_digest(request_key) in self.keys

    def add(self, request_key: str) -> None:
        self.keys.add(key_digest(request_key))


def engine_line(request_key: str, cost_usd: float, fields: Mapping[str, Any]) -> bytes:
    """One JSONL line with request_key and cost_usd first (see module docstring), newline included."""
    rest = dict(fields)
    rest.pop("request_key", None)
    rest.pop("cost_usd", None)
    body = dumps(rest)
    head = b'{"request_key":"%s","cost_usd":%s' % (request_key.encode(), repr(float(cost_usd)).encode())
    if body == b"{}":
        return head + b"}\n"
    return head + b"," + body[1:] + b"\n"


class Answer(Protocol):
    """What :func:`answer_line` reads from an answer (an online ChatResult, a batch Outcome)."""

    @property
    def content(self) -> str | None: ...
    @property
    def model_returned(self) -> str: ...
    @property
    def finish_reason(self) -> str | None: ...


def answer_line(
    rec: Record,
    request_key: str,
    answer: Answer,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float,
    reasoning_tokens: int = 0,
    timing: Mapping[str, Any] | None = None,
) -> tuple[int, bytes]:
    """Fill ``rec``'s answer fields; return the file its line goes to and the line: TRACES, or REJECTED
    (stage ``generate``) when the teacher answered ``content_filter`` (paid for, so done all the same).
    ``timing`` (online mode: ``answered_at``, ``latency_s``, ``retried``) is appended to a traces line."""
    rec.response = answer.content
    rec.model = model
    rec.model_returned = answer.model_returned
    rec.prompt_tokens = prompt_tokens
    rec.completion_tokens = completion_tokens
    rec.cost_usd = cost_usd
    rec.finish_reason = answer.finish_reason
    rec.reasoning_tokens = reasoning_tokens
    fields_ = {name: getattr(rec, name) for name in _RECORD_FIELDS}
    if rec.finish_reason == "content_filter":
        line = engine_line(
            request_key,
            cost_usd,
            {
                "id": rec.id,
                "stage": "generate",
                "reason": "content_filter",
                "detail": "the teacher answered finish_reason=content_filter",
                "record": fields_,
            },
        )
        return REJECTED, line
    if timing:
        fields_.update(timing)
    return TRACES, engine_line(request_key, cost_usd, fields_)


def failed_line(
    request_key: str, rec: Record, attempts: int, error: dict[str, Any], chain: list[dict[str, Any]]
) -> bytes:
    """A failed.jsonl line: the record's id and key, attempts made, the last error and every error
    (redacted: a server may echo a key in any field)."""
    return engine_line(
        request_key,
        0.0,
        {"id": rec.id, "key": rec.key, "attempts": attempts, "error": scrub(error), "chain": scrub(chain)},
    )


def _parse_head(line: bytes) -> tuple[str, float] | None:
    """(request_key, cost_usd) from an engine line's fixed-format head, or None."""
    if not line.startswith(_PREFIX) or line[_COST_AT : _COST_AT + len(_COST_PREFIX)] != _COST_PREFIX:
        return None
    start = _COST_AT + len(_COST_PREFIX)
    end = line.find(b",", start)
    if end < 0:
        end = line.find(b"}", start)
    try:
        return line[len(_PREFIX) : _COST_AT].decode("ascii"), float(line[start:end])
    except ValueError:
        return None


def _repair_tail(path: Path) -> None:
    """Truncate a torn last line (no trailing newline) left by a crash mid-write."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open_read(path) as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        chunk = 65536
        keep = 0
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step)
            nl = buf.rfind(b"\n")
            if nl >= 0:
                keep = pos + nl + 1
                break
    truncate_durably(path, keep)


class RunDir:
    """A run directory: paths, manifest check, done set, atomic stats."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.replaced = False
        """True when :meth:`open` replaced the plan parameters of a directory that had spent nothing."""

    @property
    def paths(self) -> RunPaths:
        """The named files of this run directory (:mod:`tracegen.rundir`)."""
        return RunPaths(self.path)

    traces_path = property(lambda self: self.paths.traces)
    failed_path = property(lambda self: self.paths.failed)
    rejected_path = property(lambda self: self.paths.rejected)
    ledger_path = property(lambda self: self.paths.ledger)
    stats_path = property(lambda self: self.paths.stats)
    manifest_path = property(lambda self: self.paths.manifest)

    @classmethod
    def open(
        cls,
        path: Path | str,
        plan_params: Mapping[str, Any] | None = None,
        config_public: Mapping[str, Any] | None = None,
        extend: bool = False,
    ) -> RunDir:
        """Create or reuse ``path``; refuse changed plan parameters / teacher settings once money was spent.

        The manifest binds only once the directory has spent money (:func:`money_spent`): a dry run, or a
        run that sent nothing (no key, a typo in --source) never locks anything; new settings replace the
        old ones and ``replaced`` is set so the caller plans again. ``plan_params`` (None: not checked) are the parameters that decide the plan; with ``extend`` only
        ``n`` may grow. ``config_public`` is ``RunConfig.public_dict()``; its TEACHER_FIELDS are checked too.
        """
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {path}: {_strerror(e)}; {_fix_hint(e)}") from None
        if not path.is_dir():
            raise RunDirError(f"{path} is not a directory; choose another --output-dir")
        manifest_path = RunPaths(path).manifest
        plan = dict(plan_params or {})
        teacher = {k: (config_public or {}).get(k) for k in TEACHER_FIELDS} if config_public else {}
        if manifest_path.exists():
            try:
                with open_read(manifest_path) as f:
                    manifest = loads(f.read())
            except (OSError, ValueError) as e:
                raise RunDirError(
                    f"{manifest_path}: unreadable ({e}); use a new --output-dir or restore the file"
                ) from None
            spent = money_spent(path)
            if spent is None:  # nothing paid for yet: the new settings simply replace the old ones
                if _same(manifest, plan if plan_params is not None else None, teacher):
                    return cls(path, manifest)
                replan = plan_params is not None and dict(manifest.get("plan_params") or {}) != plan
                if plan_params is None:  # checked for the teacher only: keep the plan parameters
                    plan = dict(manifest.get("plan_params") or {})
                manifest = _new_manifest(plan, teacher, config_public)
                _atomic_write(manifest_path, dumps(manifest) + b"\n")
                rd = cls(path, manifest)
                rd.replaced = replan
                return rd
            changed = cls._check(
                path, manifest, plan if plan_params is not None else None, teacher, extend, spent
            )
            if changed:
                manifest["plan_params"] = {**manifest.get("plan_params", {}), **plan}
                manifest["plan_fingerprint"] = _fingerprint(manifest["plan_params"])
                manifest["extended_at"] = utc_now_iso()
                _atomic_write(manifest_path, dumps(manifest) + b"\n")
            return cls(path, manifest)
        manifest = _new_manifest(plan, teacher, config_public)
        _atomic_write(manifest_path, dumps(manifest) + b"\n")
        return cls(path, manifest)

    @staticmethod
    def _check(
        path: Path,
        manifest: Mapping[str, Any],
        plan: Mapping[str, Any] | None,
        teacher: Mapping[str, Any],
        extend: bool,
        spent: str = "answers",
    ) -> bool:
        """Raise on a changed field; True when the manifest must be updated (``--extend`` grew n)."""
        grew = False
        old_teacher = manifest.get("teacher") or {}
        for name in TEACHER_FIELDS:
            if teacher and old_teacher and name in old_teacher and teacher.get(name) != old_teacher.get(name):
                raise _changed(path, spent, "teacher setting", name, old_teacher.get(name), teacher.get(name))
        if plan is None:
            return False
        old_plan = manifest.get("plan_params") or {}
        for name in sorted(set(old_plan) | set(plan)):
            old, new = old_plan.get(name), plan.get(name)
            if old == new:
                continue
            if name == "n" and isinstance(old, int) and isinstance(new, int) and new > old:
                if extend:
                    grew = True
                    continue
                raise SettingChangedError(
                    f"{path}: plan parameter 'n' grew ({old} -> {new}) after this run directory {spent}",
                    f"pass --extend to add records to this run, use a new --output-dir to start over, "
                    f"or rerun with --n {old} to continue",
                    path=str(path),
                    field="n",
                    old=old,
                    new=new,
                )
            raise _changed(path, spent, "plan parameter", name, old, new)
        return grew

    # ---- resume ----------------------------------------------------------------------------------------
    def load_done(self) -> DoneSet:
        """Read traces.jsonl and generate-stage rejects (repairing torn tails) into a done set."""
        done = DoneSet(keys=set(), n_traces=0, n_rejected=0, cost_usd=0.0)
        for path, is_traces in ((self.traces_path, True), (self.rejected_path, False)):
            try:
                _repair_tail(path)
                if not path.exists():
                    continue
                with open_read(path) as f:
                    for lineno, line in enumerate(f, 1):
                        head = _parse_head(line)
                        if head is None:
                            if not is_traces or not line.strip():
                                continue  # other stages' rejects
                            head = _slow_head(path, lineno, line)
                            if head is None:
                                continue
                        key, cost = head
                        done.keys.add(key_digest(key))
                        if math.isfinite(cost) and cost > 0:  # a corrupt cost never lowers the spend
                            done.cost_usd += cost
                        if is_traces:
                            done.n_traces += 1
                        else:
                            done.n_rejected += 1
            except OSError as e:
                raise RunDirError(f"{path}: cannot read ({_strerror(e)}); {_fix_hint(e)}") from None
        return done

    def compact_failed(self, done: DoneSet) -> int:
        """Rewrite failed.jsonl: last entry per request key, keys done since dropped. Returns lines kept."""
        path = self.failed_path
        try:
            _repair_tail(path)
            if not path.exists():
                return 0
            last: dict[str, bytes] = {}
            with open_read(path) as f:
                for line in f:
                    head = _parse_head(line)
                    if head is None:
                        continue
                    last.pop(head[0], None)
                    last[head[0]] = line
            kept = [line for key, line in last.items() if key not in done]
            _atomic_write(path, b"".join(kept))
            return len(kept)
        except OSError as e:
            raise RunDirError(f"{path}: cannot rewrite ({_strerror(e)}); {_fix_hint(e)}") from None

    def write_stats(self, stats: Mapping[str, Any]) -> None:
        """stats.json, written atomically (temp file, fsync, rename); redacted."""
        import json

        data = json.dumps(scrub(dict(stats)), indent=2, ensure_ascii=False).encode() + b"\n"
        _atomic_write(self.stats_path, data)


def _slow_head(path: Path, lineno: int, line: bytes) -> tuple[str, float] | None:
    try:
        obj = loads(line)
    except ValueError:
        raise RunDirError(
            f"{path}:{lineno}: corrupt line (not JSON); move the file aside or use a new --output-dir"
        ) from None
    key = obj.get("request_key") if isinstance(obj, dict) else None
    if not isinstance(key, str) or len(key) != 64:
        return None
    return key, float(obj.get("cost_usd") or 0.0)


def money_spent(path: Path) -> str | None:
    """What makes the manifest of ``path`` binding, in words ("spent $1.23"), or None when nothing was paid.

    Money counts once the budget ledger shows spend, answers exist, or Batch API jobs were created, in the
    directory or in one of its stages (``stages/*/``).
    """
    from .budget import Ledger, prior_spend_usd

    dirs = [RunPaths(path)]
    stages = dirs[0].stages
    if stages.is_dir():
        dirs += [RunPaths(p) for p in sorted(stages.iterdir()) if p.is_dir()]
    usd = 0.0
    answers = batches = False
    for d in dirs:
        usd += prior_spend_usd(Ledger(d.ledger).read())
        with contextlib.suppress(OSError):
            answers = answers or d.traces.stat().st_size > 0
        batches = batches or d.batches.exists()
    if usd > 0:
        return f"spent ${usd:,.4f}"
    if answers:
        return "holds answers"
    if batches:
        return "created Batch API jobs"
    return None


def _new_manifest(
    plan: Mapping[str, Any], teacher: Mapping[str, Any], config_public: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "tracegen_version": __version__,
        "created_at": utc_now_iso(),
        "plan_fingerprint": _fingerprint(plan),
        "plan_params": dict(plan),
        "teacher": dict(teacher),
        "config": dict(config_public or {}),
    }


def _same(manifest: Mapping[str, Any], plan: Mapping[str, Any] | None, teacher: Mapping[str, Any]) -> bool:
    old_teacher = manifest.get("teacher") or {}
    if teacher and any(teacher.get(k) != old_teacher.get(k) for k in TEACHER_FIELDS if k in old_teacher):
        return False
    return plan is None or dict(manifest.get("plan_params") or {}) == dict(plan)


def _changed(path: Path, spent: str, kind: str, name: str, old: Any, new: Any) -> SettingChangedError:
    """The refusal of a changed setting, with both ways out (the CLI adds the exact commands)."""
    if name == "base_url" and REHEARSAL_BASE_URL in (old, new):
        was = "a rehearsal (--rehearse)" if old == REHEARSAL_BASE_URL else f"the real teacher ({old!r})"
        cont = "without --rehearse" if old != REHEARSAL_BASE_URL else "with --rehearse"
        return SettingChangedError(
            f"{path}: this run directory {spent} as {was}; answers would mix",
            f"use a new --output-dir to start over, or rerun {cont} to continue",
            path=str(path),
            field="rehearse",
            old=old == REHEARSAL_BASE_URL,
            new=new == REHEARSAL_BASE_URL,
        )
    flag = "--" + name.replace("_", "-")
    return SettingChangedError(
        f"{path}: {kind} {name!r} changed ({old!r} -> {new!r}) after this run directory {spent}; answers "
        "would mix two settings",
        f"use a new --output-dir to start over, or rerun with {flag} {old!r} to continue",
        path=str(path),
        field=name,
        old=old,
        new=new,
    )


def _fingerprint(plan: Mapping[str, Any]) -> str:
    import json

    return hashlib.sha256(json.dumps(dict(plan), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data, write=_os_write)
    except OSError as e:
        raise RunDirError(f"{path}: cannot write ({_strerror(e)}); {_fix_hint(e)}") from None


class _AppendFile:
    """An O_APPEND file with its durable size, for truncate-on-error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def write_durable(self, chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        try:
            view = memoryview(data)
            while view:
                n = _os_write(self.fd, view)
                view = view[n:]
            os.fsync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
                os.fsync(self.fd)
            except OSError:
                pass
            raise
        self.size += len(data)

    def close(self) -> None:
        os.close(self.fd)


class ResultWriter:
    """Group-commit writer of traces.jsonl, failed.jsonl and rejected.jsonl (see module docstring)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._files: list[_AppendFile] = []
        self._pending: list[tuple[int, bytes, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.error: RunDirError | None = None
        self.lines_written = [0, 0, 0]

    async def start(self) -> None:
        """Open the files (creating them) and start the writer task."""
        paths = (self.run_dir.traces_path, self.run_dir.failed_path, self.run_dir.rejected_path)
        try:
            for p in paths:
                _repair_tail(p)
            self._files = [_AppendFile(p) for p in paths]
        except OSError as e:
            for f in self._files:
                f.close()
            raise RunDirError(
                f"cannot write to {self.run_dir.path}: {_strerror(e)}; {_fix_hint(e)}"
            ) from None
        fsync_dir(self.run_dir.path)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="tracegen-writer")

    def write(self, which: int, line: bytes) -> asyncio.Future[None]:
        """Queue ``line`` for file ``which`` (TRACES/FAILED/REJECTED); the future resolves once durable."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.error is not None:
            fut.set_exception(self.error)
            return fut
        self._pending.append((which, line, fut))
        assert self._wake is not None
        self._wake.set()
        return fut

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)
            if self._closing and not self._pending:
                return

    async def _commit(self, batch: list[tuple[int, bytes, asyncio.Future[None]]]) -> None:
        ok: set[int] = set()
        if self.error is None:
            groups: dict[int, list[bytes]] = {}
            for which, line, _ in batch:
                groups.setdefault(which, []).append(line)
            ok, failure = await asyncio.to_thread(self._write_groups, groups)
            for which in ok:
                self.lines_written[which] += len(groups[which])
            if failure is not None:
                which, e = failure
                path = self._files[which].path
                self.error = RunDirError(f"{path}: write failed ({_strerror(e)}); {_fix_hint(e)}")
        for which, _, fut in batch:
            if fut.done():
                continue
            if which in ok:
                fut.set_result(None)
            else:
                fut.set_exception(self.error or RunDirError("write failed"))

    def _write_groups(self, groups: dict[int, list[bytes]]) -> tuple[set[int], tuple[int, OSError] | None]:
        ok: set[int] = set()
        for which, lines in groups.items():
            try:
                self._files[which].write_durable(lines)
            except OSError as e:
                return ok, (which, e)
            ok.add(which)
        return ok, None

    async def close(self) -> None:
        """Flush what is queued, stop the task, close the files."""
        if self._task is None:
            return
        self._closing = True
        assert self._wake is not None
        self._wake.set()
        try:
            await self._task
        finally:
            self._task = None
            for f in self._files:
                f.close()
            self._files = []
        for _, _, fut in self._pending:  # pragma: no cover - nothing can queue after close
            if not fut.done():
                fut.set_exception(self.error or RunDirError("writer closed"))
