"""One process at a time per run directory: an exclusive lock for every mode (run, export, merge, push).

Two ``tracegen run`` on one ``--output-dir`` would pay for the same answers twice and interleave their lines;
an export during a run would read half-written files. So every command that reads or writes a run directory
holds ``<run dir>/.tracegen.lock`` first:

- the lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on that file, and the file holds the PID (and command) of
  the holder, so the refusal names the process: "… is in use by tracegen run (PID 1234) …";
- the kernel drops a flock when its process dies, however it dies (kill -9, power loss): a stale lock
  file left by a killed process is simply taken over, and its PID overwritten;
- within one process the lock is re-entrant (``run`` → ``export`` → ``push`` nest; the engine and batch
  runner take it too, for library callers), counted per directory;
- on a platform without ``fcntl`` (Windows) no lock is taken.

The lock file is opened without following a symlink.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import RunDirError

__all__ = ["LOCK_NAME", "lock_run_dir"]

LOCK_NAME = ".tracegen.lock"

_held: dict[str, tuple[int, int]] = {}
"""Real path of a locked directory -> (descriptor, nesting depth), for this process."""
_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return "another tracegen process"
    pid, _, what = text.partition(" ")
    if not pid.isdigit():
        return "another tracegen process"
    return f"{what or 'tracegen'} (PID {pid})"


@contextlib.contextmanager
def lock_run_dir(path: Path | str, what: str = "tracegen") -> Iterator[None]:
    """Hold the exclusive lock of run directory ``path`` (created if missing) for the ``with`` block.

    ``what`` names the command in the lock file ("tracegen run", "tracegen export", ...). Raises
    :class:`RunDirError` naming the holder's PID when another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, rely on the user
        yield
        return
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        key = str(directory.resolve())
    except OSError as e:
        raise RunDirError(
            f"cannot create run directory {directory}: {e.strerror}; check permissions"
        ) from None
    with _guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is not None:
        try:
            yield
        finally:
            _release(key)
        return
    lock_path = directory / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise RunDirError(
            f"{lock_path}: cannot open the run-directory lock ({e.strerror}); it must be a regular file "
            "(not a symlink) the user can write"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirError(
            f"{directory} is in use by {holder}; wait for it to finish or stop it, or use another "
            "--output-dir (two processes on one run directory would pay for the same answers twice)"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
    except OSError:
        pass  # the flock is what protects; the PID is only for the message
    with _guard:
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        _release(key)


def _release(key: str) -> None:
    with _guard:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
    os.close(fd)  # closing the descriptor drops the flock; the file stays (a later taker overwrites it)
