"""Local readers: JSON lines, JSON arrays, Parquet and saved datasets, streamed row by row.

Each reader yields ``(where, raw dict or _Bad)``; nothing is loaded whole (see :mod:`tracegen.planning.sources`).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from ..errors import SourceError
from .source_rows import META_COLUMNS, _Bad

_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_BATCH_ROWS = 1024
_CHUNK_CHARS = 1 << 16
_decode_json = json.JSONDecoder().decode

# ---- readers: each yields (where, raw dict or _Bad) ------------------------------------------------------
RawItem = tuple[str, "dict[str, Any] | _Bad"]
_T = TypeVar("_T")


def _open_text(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _as_object(value: Any) -> dict[str, Any] | _Bad:
    if isinstance(value, dict):
        return value
    return _Bad("malformed_json", "line", f"is a JSON {type(value).__name__}, not an object")


def _lines(f: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line, size) of every line; the line is None when longer than ``max_line_bytes`` (the
    rest of it is skipped in chunks, never held)."""
    lineno = 0
    while True:
        line = f.readline(max_line_bytes + 1)
        if not line:
            return
        lineno += 1
        if len(line) <= max_line_bytes or line.endswith(b"\n"):
            yield lineno, line, len(line)
            continue
        size = len(line)
        while True:
            rest = f.readline(1 << 20)
            size += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        yield lineno, None, size


_NOT_FAST = object()


def _read_jsonl(path: Path, label: str, max_line_bytes: int) -> Iterator[RawItem]:
    """``(file:line, object or why the line is bad)`` of each non-blank line, a block of lines at a time."""
    with _open_text(path) as f:
        lineno, rest = 1, b""  # lineno: the number of the block's first line
        while True:
            block = f.read(_READ_BYTES)
            lines = (rest + block).split(b"\n")
            rest = lines.pop() if block else b""
            too_long = None
            if len(rest) > max_line_bytes:  # no newline yet: the line is too long; skip the rest of it
                size, after = _skip_line(f)
                too_long, rest = len(rest) + size, after
            yield from _jsonl_items(lines, lineno, label, max_line_bytes, ended=not block)
            lineno += len(lines)
            if too_long is not None:
                what = f"is {too_long:,} bytes, over the {max_line_bytes:,} limit"
                yield f"{label}:{lineno}", _Bad("line_too_long", "line", what)
                lineno += 1
            if not block:
                return


def _jsonl_items(
    lines: list[bytes], first: int, label: str, max_line_bytes: int, *, ended: bool
) -> Iterator[RawItem]:
    """The items of a block of lines, the first numbered ``first``; ``ended``: its last line ends the file
    without a newline."""
    if lines and max(map(len, lines)) <= max_line_bytes:
        try:  # the common case: every line an object, decoded by one C-level map
            values = list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:
            values = []
        if values and all(map(_is_dict, values)):
            numbers = map(str, range(first, first + len(lines)))
            yield from zip(map(f"{label}:".__add__, numbers), values, strict=True)
            return
    for i, line in enumerate(lines):
        newline = b"" if ended and i == len(lines) - 1 else b"\n"
        if len(line) > max_line_bytes:
            what = f"is {len(line) + len(newline):,} bytes, over the {max_line_bytes:,} limit"
            yield f"{label}:{first + i}", _Bad("line_too_long", "line", what)
        elif line.strip():
            # the newline kept: the standard parser's messages then name the positions they always did
            yield f"{label}:{first + i}", _decode_line(line + newline)


def _decode_line(line: bytes) -> dict[str, Any] | _Bad:
    """One JSON line (newline included) as an object, or why it is bad."""
    try:
        value = orjson.loads(line)  # fast path; anything it refuses gets the standard parser's verdict
    except orjson.JSONDecodeError:
        value = _NOT_FAST
    try:
        if value is _NOT_FAST:
            value = _decode_json(line.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        text = line[:8000].decode("utf-8", errors="replace").rstrip("\r\n")
        return _Bad("malformed_json", "line", f"is not valid JSON ({_short(e)})", text[:2000])
    except RecursionError:
        return _Bad("malformed_json", "line", "is not valid JSON (nested too deeply)")
    return _as_object(value)


_READ_BYTES = 1 << 16
"""Block size of the task-size read of JSON lines (small blocks stay in the CPU cache and the heap small)."""


def _jsonl_objects(path: Path, max_line_bytes: int) -> Iterator[dict[str, Any]]:
    """The objects ``_read_jsonl`` yields, nothing else (for the cheap task-size read, which leaves bad
    lines out), decoded a block of lines at a time."""
    with _open_text(path) as f:
        rest = b""
        while True:
            block = f.read(_READ_BYTES)
            lines = (rest + block).split(b"\n")
            rest = lines.pop() if block else b""
            if len(rest) > max_line_bytes:  # no newline yet: the line is too long; skip the rest of it
                rest = _skip_line(f)[1]
            if lines and max(map(len, lines)) > max_line_bytes:
                lines = [line for line in lines if len(line) <= max_line_bytes]
            try:  # the common case: every line an object, decoded by one C-level map
                values: list[Any] = list(map(orjson.loads, lines))
            except orjson.JSONDecodeError:
                values = [_decode_line(line + b"\n") for line in lines if line.strip()]
            if all(map(_is_dict, values)):
                yield from values
            else:
                yield from (value for value in values if type(value) is dict)
            if not block:
                return


def _is_dict(value: object) -> bool:
    return type(value) is dict


def _skip_line(f: IO[bytes]) -> tuple[int, bytes]:
    """Read past the end of the current line: (bytes read up to and including its newline, what follows
    the newline in the last block read)."""
    size = 0
    while True:
        block = f.read(_READ_BYTES)
        cut = block.find(b"\n")
        if not block:
            return size, b""
        if cut >= 0:
            return size + cut + 1, block[cut + 1 :]
        size += len(block)


def _guarded(items: Iterator[_T], label: str) -> Iterator[_T]:
    """``items``, with an unreadable file (bad gzip, invalid UTF-8 in a .json array, I/O error) as one
    SourceError line instead of a traceback."""
    import zlib

    try:
        yield from items
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise SourceError(
            f"{label}: not a readable gzip file ({_short(e)}); re-download or recompress it"
        ) from None
    except UnicodeDecodeError as e:
        raise SourceError(
            f"{label}: not UTF-8 text (byte {e.start} of a read block); save it as UTF-8"
        ) from None
    except OSError as e:
        raise SourceError(f"{label}: cannot read ({e.strerror or _short(e)})") from None


def _short(e: Exception) -> str:
    return str(e).split("\n", 1)[0][:120]


def _read_json_array(path: Path, label: str, max_line_bytes: int) -> Iterator[RawItem]:
    """Decode a top-level JSON array one element at a time (memory: one element plus a read buffer)."""
    decoder = json.JSONDecoder()
    with _open_text(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8")
        buf, pos, eof = f.read(_CHUNK_CHARS), 0, False

        def refill() -> None:
            nonlocal buf, pos, eof
            chunk = f.read(_CHUNK_CHARS)
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0

        def next_char() -> str:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if eof:
                    return ""
                refill()

        if next_char() != "[":
            raise SourceError(f"{label}: a .json source must be JSON lines or one JSON array of objects")
        pos += 1
        index = 0
        while True:
            c = next_char()
            if c == "]" and index == 0:
                return
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    break
                except RecursionError:
                    yield (
                        f"{label}[{index}]",
                        _Bad("malformed_json", "line", "is not valid JSON (nested too deeply)"),
                    )
                    return
                except json.JSONDecodeError as e:
                    if len(buf) - pos > max_line_bytes:
                        yield (
                            f"{label}[{index}]",
                            _Bad(
                                "line_too_long",
                                "line",
                                f"is over the {max_line_bytes:,}-byte limit of one element",
                            ),
                        )
                        return
                    if eof:
                        where = f"{label}[{index}]"
                        yield where, _Bad("malformed_json", "line", f"is not valid JSON ({_short(e)})")
                        return
                    refill()
            yield f"{label}[{index}]", _as_object(value)
            index += 1
            pos = end
            c = next_char()
            if c == "]":
                return
            if c != ",":
                where = f"{label}[{index}]"
                yield where, _Bad("malformed_json", "line", "is not valid JSON (expected ',' or ']')")
                return
            pos += 1


def _read_json(path: Path, label: str, max_line_bytes: int) -> Iterator[RawItem]:
    with _open_text(path) as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):
        yield from _read_json_array(path, label, max_line_bytes)
    else:
        yield from _read_jsonl(path, label, max_line_bytes)


def _read_parquet(path: Path, label: str) -> Iterator[RawItem]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a broken file
        raise SourceError(f"{label}: not a readable Parquet file ({_short(e)})") from None
    row = 0
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
        for raw in batch.to_pylist():
            yield f"{label}[{row}]", raw
            row += 1


def _read_saved_dataset(path: Path, label: str) -> Iterator[RawItem]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError/ValueError for a broken directory
        raise SourceError(f"{label}: cannot load the saved dataset ({_short(e)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ["train"] if "train" in loaded else sorted(loaded)
        parts = [(loaded[s], f"{label}/{s}") for s in splits]
    else:
        parts = [(loaded, label)]
    for ds, part_label in parts:
        row = 0
        for batch in ds.iter(batch_size=_BATCH_ROWS):
            columns = list(batch)
            size = len(batch[columns[0]]) if columns else 0
            for i in range(size):
                yield f"{part_label}[{row}]", {c: batch[c][i] for c in columns}
                row += 1


def _read_parquet_columns(path: Path, label: str) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a broken file
        raise SourceError(f"{label}: not a readable Parquet file ({_short(e)})") from None
    columns = [c for c in META_COLUMNS if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS * 16, columns=columns):
        lists = {c: batch.column(c).to_pylist() for c in columns}
        for i in range(batch.num_rows):
            yield {c: values[i] for c, values in lists.items()}
