"""Durable file writes shared by the run-directory writers: directory fsync, atomic replace, appends.

Run-directory files are opened without following a symlink (:func:`open_nofollow`): a ``traces.jsonl`` or
``ledger.jsonl`` that is a symlink is refused with :class:`~tracegen.errors.RunDirError`, never followed to a
file outside the directory.

A write is durable once its bytes are fsynced and, when it adds a name to a directory (a new file, a
rename), once that directory is fsynced too. Functions here raise :class:`OSError` and leave the message to
the caller (each names its own file and the way out), except :func:`write_files_atomically`, whose callers
share one :class:`~tracegen.errors.RunDirError` text.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

from .errors import RunDirError

__all__ = [
    "atomic_write_bytes",
    "fsync_dir",
    "open_append",
    "open_nofollow",
    "open_read",
    "truncate_durably",
    "write_files_atomically",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symlink: :class:`RunDirError` names the file and the way out."""
    try:
        return os.open(path, flags | _NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (_NOFOLLOW and os.path.islink(path)):
            raise RunDirError(
                f"{path} is a symbolic link; tracegen does not follow links in a run directory: "
                "replace it with a regular file (or use another --output-dir)"
            ) from None
        raise


def open_read(path: Path) -> BinaryIO:
    """``path`` opened for binary reading, refusing a symlink."""
    return os.fdopen(open_nofollow(path, os.O_RDONLY), "rb")


def fsync_dir(path: Path) -> None:
    """fsync directory ``path`` so a create or rename in it survives a crash; best effort (not every
    platform or filesystem can open or fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_append(path: Path) -> int:
    """A write-only ``O_APPEND`` descriptor on ``path``, created 0o644 if missing (then its directory is
    fsynced)."""
    created = not path.exists()
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if created:
        fsync_dir(path.parent)
    return fd


def truncate_durably(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and fsync it (drops a torn last line left by a crash mid-write)."""
    fd = open_nofollow(path, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path, data: bytes | memoryview, *, write: Callable[[int, memoryview], int] = os.write
) -> None:
    """Replace ``path`` with ``data``: temp file ``<name>.tmp``, fsync, rename, directory fsync.

    On :class:`OSError` the temp file is removed and the error re-raised; ``path`` is then unchanged.
    ``write`` is the ``os.write`` to use (tests inject a full disk).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_files_atomically(targets: list[Path], write: Callable[[list[IO[str]]], None]) -> None:
    """Write the text files ``targets`` (same directory) together: ``write`` fills one temp file per target
    (``.<name>.tmp-<pid>``), then each is fsynced and renamed into place and the directory fsynced.

    Temp files never outlive the call. Raises :class:`RunDirError` naming the files on an OS error.
    """
    temps = [t.with_name(f".{t.name}.tmp-{os.getpid()}") for t in targets]
    try:
        with contextlib.ExitStack() as stack:
            files: list[IO[str]] = [
                stack.enter_context(
                    os.fdopen(
                        open_nofollow(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                        "w",
                        encoding="utf-8",
                        newline="\n",
                    )
                )
                for t in temps
            ]
            write(files)
            for f in files:
                f.flush()
                os.fsync(f.fileno())
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    except OSError as e:
        raise RunDirError(
            f"{targets[0].parent}: cannot write {', '.join(t.name for t in targets)} ({e.strerror}); "
            "check free disk space and permissions"
        ) from None
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
    fsync_dir(targets[0].parent)
