"""Hub datasets: probing a repository, streaming its rows, and reading only its metadata columns."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import SourceError
from .file_readers import _DATA_SUFFIXES, RawItem, _short
from .source_rows import META_COLUMNS

_PROBE_TIMEOUT_S = 10.0
_COLUMN_READ_BLOCK = 64 * 1024


def _hub_unreachable(repo_id: str, why: str) -> SourceError:
    return SourceError(
        f"Hub dataset {repo_id!r} could not be reached ({why}): check the id, set HF_TOKEN for a gated or "
        "private dataset, unset HF_HUB_OFFLINE, or pass a local --source (files or a save_to_disk directory)"
    )


def _probe_hub(repo_id: str) -> list[str]:
    """The dataset's file paths; fails in seconds, without retries, when it cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        info = HfApi().dataset_info(repo_id, timeout=_PROBE_TIMEOUT_S)
    except OfflineModeIsEnabled:
        raise _hub_unreachable(repo_id, "HF_HUB_OFFLINE is set") from None
    except GatedRepoError:
        raise _hub_unreachable(repo_id, "gated dataset, access not granted") from None
    except RepositoryNotFoundError:
        raise _hub_unreachable(repo_id, "not found, or private") from None
    except Exception as e:  # network errors come from httpx/requests/OSError alike
        raise _hub_unreachable(repo_id, f"{type(e).__name__}: {_short(e)}") from None
    return [sibling.rfilename for sibling in info.siblings or []]


def _check_hub_files(repo_id: str, files: Sequence[str], data_files: str | None) -> None:
    """A SourceError naming the folder or file ``data_files`` asks for when the repository lacks it."""
    if data_files is None or any(fnmatch.fnmatch(f, data_files) for f in files):
        return
    folder = data_files.split("/", 1)[0] if "/" in data_files else ""
    folders = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    missing = f"folder {folder!r}" if folder and folder not in folders else f"files {data_files!r}"
    raise SourceError(
        f"Hub dataset {repo_id!r} has no {missing} (it has: {', '.join(folders) or 'no folders'}); "
        "check the preset's layout against the repository, or pass a local --source"
    )


def _is_parquet_data(files: Sequence[str], data_files: str | None) -> bool:
    """Whether the part's data files are all Parquet (so its metadata columns can be read alone)."""
    data = [
        f
        for f in files
        if (data_files is None or fnmatch.fnmatch(f, data_files))
        and f.lower().endswith((*_DATA_SUFFIXES, ".gz", ".csv", ".arrow", ".txt"))
    ]
    return bool(data) and all(f.lower().endswith(".parquet") for f in data)


def _read_hub(repo_id: str, label: str, split: str, data_files: str | None) -> Iterator[RawItem]:
    import datasets

    try:
        if data_files is None:
            ds = datasets.load_dataset(repo_id, split=split, streaming=True)
        else:
            ds = datasets.load_dataset(repo_id, data_files=data_files, split=split, streaming=True)
        iterator = iter(ds)
    except Exception as e:  # datasets raises many types here; all mean "cannot read"
        raise _hub_read_error(repo_id, data_files, e) from None
    for row, raw in _stream(iterator, repo_id, "reading"):
        yield f"{label}[{row}]", raw


def _read_hub_columns(
    repo_id: str, label: str, split: str, data_files: str | None
) -> Iterator[dict[str, Any]]:
    """Stream only the metadata columns of a Parquet Hub dataset (``datasets`` reads just those chunks)."""
    import datasets

    kwargs: dict[str, Any] = {"split": split, "streaming": True}
    if data_files is not None:
        kwargs["data_files"] = data_files
    try:
        features = datasets.load_dataset(repo_id, **kwargs).features
        names = list(features) if features is not None else []
        columns = [c for c in META_COLUMNS if c in names]
        if not columns:  # nothing to size tasks by: every row of this part becomes a planning candidate
            return
        # small read blocks: the metadata column chunks are a few KB each, and the default read-ahead
        # block would fetch most of the file around them
        storage = {"hf": {"block_size": _COLUMN_READ_BLOCK}}
        iterator = iter(datasets.load_dataset(repo_id, columns=columns, storage_options=storage, **kwargs))
    except Exception as e:  # datasets raises many types here; all mean "cannot read"
        raise _hub_read_error(repo_id, data_files, e) from None
    for _row, raw in _stream(iterator, label, "reading task names"):
        yield raw


def _stream(iterator: Iterator[Any], name: str, reading: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) of a Hub stream; a network failure in the middle of it is one SourceError line."""
    row = 0
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except Exception as e:  # a network failure in the middle of the stream
            raise SourceError(
                f"Hub dataset {name!r}: {reading} stopped at row {row} ({type(e).__name__}: {_short(e)}); "
                "rerun, or download it and pass a local --source"
            ) from None
        yield row, dict(raw)
        row += 1


def _hub_read_error(repo_id: str, data_files: str | None, e: Exception) -> SourceError:
    if isinstance(e, FileNotFoundError) or type(e).__name__ in (
        "DataFilesNotFoundError",
        "EmptyDatasetError",
    ):
        what = f"no files matching {data_files!r}" if data_files else "no data files"
        return SourceError(f"Hub dataset {repo_id!r} has {what} ({_short(e)}); check the folder name")
    return _hub_unreachable(repo_id, f"{type(e).__name__}: {_short(e)}")
