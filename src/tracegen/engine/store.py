"""Run-directory IO for the engine: durable results, resume, manifest check, stats.

Durability. An answer counts as done only once its line is written *and fsynced*. A single writer task does
group commit: lines queue up while the previous batch is being written and fsynced in a worker thread, so
one fsync covers every line that arrived meanwhile (throughput is not one fsync per line); commits start at
most every ``COMMIT_INTERVAL_S`` (5 ms), so at high answer rates each covers more lines. Each producer
awaits the future of its own line, or has a callback called (:meth:`ResultWriter.write_then`, which
:meth:`~ResultWriter.write` is built on). On a write error (ENOSPC, EIO, permissions) the file is truncated back
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

Modules: the line format and the done set live in :mod:`tracegen.engine.lines`, the manifest's binding rules
in :mod:`tracegen.engine.manifest`; this module (RunDir, ResultWriter) re-exports their names.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import RunDirError, SettingChangedError
from ..redact import scrub
from ..rundir import RunPaths, atomic_write_bytes, fsync_dir, open_nofollow, open_read, truncate_durably
from ._json import dumps, loads
from .budget import utc_now_iso
from .lines import (
    FAILED,
    REJECTED,
    TRACES,
    Answer,
    DoneSet,
    _parse_head,
    _slow_head,
    answer_line,
    engine_line,
    failed_line,
    key_digest,
)
from .manifest import (
    REHEARSAL_BASE_URL,
    TEACHER_FIELDS,
    _changed,
    _fingerprint,
    _new_manifest,
    _same,
    money_spent,
)

log = logging.getLogger("tracegen.engine")

__all__ = [
    "FAILED",
    "REHEARSAL_BASE_URL",
    "REJECTED",
    "TEACHER_FIELDS",
    "TRACES",
    "Answer",
    "DoneSet",
    "ResultWriter",
    "RunDir",
    "answer_line",
    "engine_line",
    "failed_line",
    "key_digest",
    "money_spent",
]

# Indirection so tests can simulate a full disk.
_os_write = os.write

#: The least time between the starts of two group commits (seconds). A commit's fsync and its hand-off to a
#: worker thread cost about the same for one line as for a hundred: when answers pour in, each commit takes
#: all that came meanwhile. A line waits at most this much longer before its request counts as done -- and an
#: answer received in that window and lost to a kill -9 is asked again on resume, so the window stays short.
COMMIT_INTERVAL_S = 0.005


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


def _fix_hint(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space (or choose another --output-dir), then rerun the same command to resume"
    return "fix the directory's permissions or choose another --output-dir, then rerun the same command"


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


#: Called by the writer with a line's file (TRACES/FAILED/REJECTED) once the line is durable (error None),
#: or with the error that keeps it from being so.
Durable = Callable[[int, RunDirError | None], None]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ResultWriter:
    """Group-commit writer of traces.jsonl, failed.jsonl and rejected.jsonl (see module docstring)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._files: list[_AppendFile] = []
        self._pending: list[tuple[int, bytes, Durable]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._pause: asyncio.Future[None] | None = None  # the wait for the commit interval, if any
        self.error: RunDirError | None = None
        self.lines_written = [0, 0, 0]
        #: Called (on the event loop) with each group of traces.jsonl lines once they are durable.
        self.on_traces: Callable[[list[bytes]], None] | None = None

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

        def done(_: int, error: RunDirError | None) -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        self.write_then(which, line, done)
        return fut

    def write_then(self, which: int, line: bytes, done: Durable) -> None:
        """Queue ``line`` for file ``which``; ``done(which, None)`` is called once it is durable, or
        ``done(which, error)`` when it cannot be (also when the writer failed already, at once).

        No future and no task waiting on one: what the caller does after the line is durable, ``done``
        does, from the writer's commit (it must be quick and not raise)."""
        if self.error is not None:
            done(which, self.error)
            return
        pending = self._pending
        pending.append((which, line, done))
        if len(pending) == 1:  # else set already: the writer clears it only as it takes the queue
            assert self._wake is not None
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        last = -math.inf
        while True:
            await self._wake.wait()
            early = last + COMMIT_INTERVAL_S - loop.time()
            if early > 0 and not self._closing:  # lines keep queuing meanwhile (wake stays set)
                self._pause = pause = loop.create_future()
                timer = loop.call_later(early, _resolve, pause)
                try:
                    await pause  # until the interval is over, or close() is called
                finally:
                    timer.cancel()
                    self._pause = None
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                last = loop.time()
                await self._commit(batch)
            if self._closing and not self._pending:
                return

    async def _commit(self, batch: list[tuple[int, bytes, Durable]]) -> None:
        ok: set[int] = set()
        if self.error is None:
            groups: dict[int, list[bytes]] = {}
            for which, line, _ in batch:
                groups.setdefault(which, []).append(line)
            ok, failure = await asyncio.to_thread(self._write_groups, groups)
            for which in ok:
                self.lines_written[which] += len(groups[which])
            if self.on_traces is not None and TRACES in ok:
                self._tell(groups[TRACES])
            if failure is not None:
                which, e = failure
                path = self._files[which].path
                self.error = RunDirError(f"{path}: write failed ({_strerror(e)}); {_fix_hint(e)}")
        for which, _, done in batch:
            error = None if which in ok else self.error or RunDirError("write failed")
            try:
                done(which, error)
            except Exception:  # a caller's bug must not stop the writer (the others' lines wait on it)
                log.exception("a durable-line callback failed")

    def _tell(self, lines: list[bytes]) -> None:
        """Hand durable traces lines to the observer; its failure never touches the run."""
        assert self.on_traces is not None
        try:
            self.on_traces(lines)
        except Exception:  # an observer's bug: log it, stop telling it, keep writing
            log.exception("the traces observer failed; it gets no more lines")
            self.on_traces = None

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
        if self._pause is not None:  # no waiting for the commit interval: flush now
            _resolve(self._pause)
        try:
            await self._task
        finally:
            self._task = None
            for f in self._files:
                f.close()
            self._files = []
        for which, _, done in self._pending:  # pragma: no cover - nothing can queue after close
            done(which, self.error or RunDirError("writer closed"))
