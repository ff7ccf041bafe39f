"""Push an exported dataset to the Hugging Face Hub: data, card and the run's public config, in one commit.

::

    push("runs/orca-1m", "me/orca-1m")                       # private by default
    push("runs/orca-1m/dataset", "me/orca-1m", config_name="openorca", private=False)

What a push does:

1. finds the export (``RUN_DIR/dataset`` or the export dir itself; nothing local is ever written);
2. resolves the token (``token=``, else ``HF_TOKEN``, else the ``hf auth login`` token file) and checks it
   with one ``whoami`` call bounded by ``timeout_s``, so a wrong token or an unreachable endpoint fails fast;
3. creates the dataset repo if needed (``private=True`` by default; an existing repo keeps its visibility);
4. commits, in one commit: the Parquet shards of the pushed configs, ``tracegen/*.json`` (manifest and
   stats, secrets scrubbed at export) and ``README.md`` rendered again with the real repo id, merged into the
   card already there (text outside the tracegen markers and metadata added on the Hub are kept). Files of
   the pushed configs that the new export no longer has (fewer shards) are deleted; unchanged files are
   skipped by huggingface_hub; other configs already in the repo (pushed from another run) stay, and stay
   in the card.

``config_name`` pushes only that exported config (``messages``: TRL's conversational format, exported with
``--format messages`` or ``export_formats: [messages]``). JSONL copies stay local unless ``include_jsonl=True``.
Every failure is one :class:`~tracegen.errors.HubError` line that says what to do; the token never appears.
The endpoint is ``endpoint=``, else ``HF_ENDPOINT`` (read at call time), else huggingface.co.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import httpx2
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    get_session,
    get_token,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

from .._version import __version__
from ..errors import ConfigError, HubError
from ..redact import register_secret
from ..rundir import RunPaths, lock_run_dir
from . import card as card_mod
from .export import find_export_dir, load_manifest

__all__ = ["PushResult", "push", "resolve_token"]

logger = logging.getLogger(__name__)

NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"
_REPO_ID = re.compile(r"^(?:(?P<ns>[A-Za-z0-9][A-Za-z0-9._-]*)/)?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)$")


@dataclass(frozen=True)
class PushResult:
    """Where the dataset went."""

    repo_id: str
    url: str
    """The dataset page, e.g. https://huggingface.co/datasets/me/orca."""
    commit_oid: str
    commit_url: str
    private: bool
    configs: tuple[str, ...]
    rows: int
    files_added: int
    """Files in the commit (new or changed; unchanged ones are skipped)."""
    files_deleted: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "url": self.url,
            "commit": self.commit_oid,
            "commit_url": self.commit_url,
            "private": self.private,
            "configs": list(self.configs),
            "rows": self.rows,
            "files_added": self.files_added,
            "files_deleted": self.files_deleted,
        }


def resolve_token(token: str | None = None) -> str:
    """``token``, else HF_TOKEN, else the token saved by ``hf auth login``; HubError when there is none."""
    found = token or get_token()
    if not found:
        raise HubError(NO_TOKEN)
    register_secret(found)  # redacted from every later message, wherever it came from
    return found


def _endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


class _Errors:
    """Turns huggingface_hub / network exceptions into one HubError line, never showing the token."""

    def __init__(self, endpoint: str, token: str, repo_id: str) -> None:
        self.endpoint, self.token, self.repo_id = endpoint, token, repo_id
        self.user = ""
        self.namespaces: list[str] = []

    def _clean(self, text: str) -> str:
        one_line = " ".join(str(text).split())
        return str(card_mod.scrub_secrets(one_line, extra_secrets=[self.token]))[:300]

    def raise_for(self, e: BaseException, doing: str) -> NoReturn:
        if isinstance(e, HubError):
            raise e
        if isinstance(e, OfflineModeIsEnabled):
            raise HubError(
                "huggingface_hub is in offline mode (HF_HUB_OFFLINE=1): unset it to push"
            ) from None
        if isinstance(e, httpx2.TransportError):
            raise HubError(
                f"cannot reach the Hugging Face Hub at {self.endpoint} while {doing} ({type(e).__name__}); "
                "check your network connection or HF_ENDPOINT"
            ) from None
        if isinstance(e, HfHubHTTPError):
            status = e.response.status_code if e.response is not None else 0
            server = self._clean(e.server_message or "")
            namespace = self.repo_id.split("/", 1)[0]
            if status == 401:
                raise HubError(
                    f"the Hugging Face token was rejected (401) while {doing}: it is invalid, expired or "
                    "read-only; create a write token at https://huggingface.co/settings/tokens and set "
                    "HF_TOKEN or run `hf auth login`"
                ) from None
            if status == 403:
                mine = ", ".join(self.namespaces) or "your own"
                raise HubError(
                    f"no write access to namespace {namespace!r} (403) while {doing}: push to one of your "
                    f"namespaces ({mine}) or use a token with write access to {namespace!r}"
                ) from None
            if status == 404:
                raise HubError(
                    f"dataset repo {self.repo_id} or namespace {namespace!r} not found (404) while {doing}: "
                    "check the repo id and that your token can see it"
                ) from None
            if status == 400 or status == 422:
                raise HubError(f"the Hub rejected the upload ({status}) while {doing}: {server}") from None
            if status in (409, 412):
                raise HubError(f"the repo changed on the Hub while {doing} ({status}); push again") from None
            raise HubError(
                f"the Hub answered {status} while {doing}: {server or 'no details'}; try again later"
            ) from None
        if isinstance(e, ValueError) and "metadata" in str(e):
            raise HubError(f"the Hub rejected the dataset card: {self._clean(str(e))}") from None
        raise e


def _whoami(endpoint: str, token: str, timeout_s: float, errors: _Errors) -> dict[str, Any]:
    """One bounded ``whoami`` call: checks the token and the endpoint before any work."""
    if constants.is_offline_mode():
        errors.raise_for(OfflineModeIsEnabled("offline"), "checking the token")
    url = f"{endpoint}/api/whoami-v2"
    try:
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"tracegen/{__version__}"}
        r = get_session().get(url, headers=headers, timeout=timeout_s)
    except Exception as e:  # transport errors → one line
        errors.raise_for(e, "checking the token")
    if r.status_code == 401:
        raise HubError(
            "the Hugging Face token was rejected (401): it is invalid or expired; create one at "
            "https://huggingface.co/settings/tokens and set HF_TOKEN or run `hf auth login`"
        )
    if r.status_code == 404:
        raise HubError(
            f"{endpoint} does not look like a Hugging Face Hub (whoami answered 404); check HF_ENDPOINT"
        )
    if r.status_code >= 400:
        raise HubError(f"the Hub answered {r.status_code} to whoami at {endpoint}; try again later")
    try:
        data = r.json()
    except ValueError:
        raise HubError(f"{endpoint} does not look like a Hugging Face Hub (whoami is not JSON)") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise HubError(f"{endpoint} does not look like a Hugging Face Hub (unexpected whoami answer)")
    return data


def _remote_card(api: HfApi, repo_id: str, files: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The README.md on the Hub and its metadata ("" and {} when missing or unreadable)."""
    if "README.md" not in files:
        return "", {}
    with tempfile.TemporaryDirectory(prefix="tracegen-hub-") as tmp:
        try:
            path = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", cache_dir=tmp)
        except EntryNotFoundError:
            return "", {}
        content = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        meta, _ = card_mod.split_card(content)
    except ConfigError:  # a hand-edited, broken card on the Hub: ours replaces it
        logger.warning("the README.md on the Hub has no readable metadata; it will be replaced")
        return "", {}
    return content, meta


def _card_for_push(
    manifest: Mapping[str, Any],
    repo_id: str,
    ours: set[str],
    remote: str,
    remote_meta: Mapping[str, Any],
    remote_files: Sequence[str],
) -> str:
    """Our card for the pushed configs, merged into the card already on the Hub (see card.merge_card)."""
    keep_configs, keep_infos = _kept_remote(remote_meta, ours, remote_files)
    content = card_mod.render_card(
        manifest, repo_id=repo_id, only=ours, keep_configs=keep_configs, keep_infos=keep_infos
    )
    card_mod.validate_card(content)
    if not remote:
        return content
    merged = card_mod.merge_card(remote, content, card_mod.CardOptions.from_dict(manifest.get("card")))
    try:
        card_mod.validate_card(merged)
    except ConfigError as e:
        logger.warning("the card on the Hub cannot be merged (%s); replacing it", e)
        return content
    return merged


def _kept_remote(
    meta: Mapping[str, Any], ours: set[str], remote_files: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Remote ``configs`` / ``dataset_info`` entries of other configs whose data is still in the repo."""
    kept: list[dict[str, Any]] = []
    for cfg in meta.get("configs") or []:
        if not isinstance(cfg, dict) or cfg.get("config_name") in ours:
            continue
        patterns: list[str] = []
        for spec in cfg.get("data_files") or []:
            paths = spec.get("path") if isinstance(spec, dict) else spec
            patterns += [str(p) for p in (paths if isinstance(paths, list) else [paths])]
        if not patterns or any(fnmatch.fnmatch(f, p) for p in patterns for f in remote_files):
            kept.append(dict(cfg))
    names = {c.get("config_name") for c in kept}
    infos = meta.get("dataset_info") or []
    infos = infos if isinstance(infos, list) else [infos]
    kept_infos = [dict(i) for i in infos if isinstance(i, dict) and i.get("config_name") in names]
    return kept, kept_infos


_FORMAT_NAMES = ("openorca", "full", "alpaca", "sharegpt", "messages")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locking_the_run(
    fn: Callable[Concatenate[str | Path, _P], _R],
) -> Callable[Concatenate[str | Path, _P], _R]:
    """``fn(path, ...)`` holding the lock of the run directory ``path`` is (or whose export dir it is), if any."""

    @functools.wraps(fn)
    def locked(path: str | Path, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        where = Path(path)
        run = next((d for d in (where, where.parent) if RunPaths(d).manifest.is_file()), None)
        with lock_run_dir(run, "tracegen push") if run is not None else contextlib.nullcontext():
            return fn(path, *args, **kwargs)

    return locked


@_locking_the_run
def push(
    run_dir_or_export_dir: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    config_name: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    include_jsonl: bool = False,
    timeout_s: float = 10.0,
) -> PushResult:
    """Push the export of a run (or an export dir) to the dataset repo ``repo_id`` in one commit.

    ``private`` applies when the repo is created. ``config_name`` pushes that exported config only.
    ``timeout_s`` bounds the first (whoami) request, seconds. Raises HubError with one line on any failure;
    the local dataset is only read.
    """
    export_dir = find_export_dir(run_dir_or_export_dir)
    manifest = load_manifest(export_dir)
    names = [str(c["name"]) for c in manifest["configs"]]
    if config_name is not None and config_name not in names:
        raise HubError(
            f"--config-name {config_name!r} is not in the export; exported configs: {', '.join(names)}"
            + (
                f" (export it first: tracegen export RUN_DIR --format {config_name})"
                if config_name in _FORMAT_NAMES
                else ""
            )
        )
    pushed = [c for c in manifest["configs"] if config_name is None or c["name"] == config_name]
    m = _REPO_ID.match(repo_id)
    if m is None:
        raise HubError(f"repo id {repo_id!r} is not of the form namespace/name (letters, digits, - _ .)")

    token = resolve_token(token)
    base = _endpoint(endpoint)
    errors = _Errors(base, token, repo_id)
    me = _whoami(base, token, timeout_s, errors)
    errors.user = me["name"]
    errors.namespaces = [me["name"], *(o["name"] for o in me.get("orgs") or [] if isinstance(o, dict))]
    repo_id = f"{m.group('ns') or me['name']}/{m.group('name')}"
    errors.repo_id = repo_id

    api = HfApi(endpoint=base, token=token, library_name="tracegen", library_version=__version__)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.dataset_info(repo_id)
        if bool(info.private) != private:
            logger.warning(
                "%s already exists and is %s; its visibility was left as it is",
                repo_id,
                "private" if info.private else "public",
            )
        remote_files = api.list_repo_files(repo_id, repo_type="dataset")
        remote_card, remote_meta = _remote_card(api, repo_id, remote_files)
    except Exception as e:
        errors.raise_for(e, f"preparing {repo_id}")

    ours = {str(c["name"]) for c in pushed}
    content = _card_for_push(manifest, repo_id, ours, remote_card, remote_meta, remote_files)

    uploads: list[str] = []
    for c in pushed:
        uploads += list(c["data_files"])
        if include_jsonl and c.get("jsonl_file"):
            uploads.append(str(c["jsonl_file"]))
    run_files = sorted(p.relative_to(export_dir).as_posix() for p in (export_dir / "tracegen").glob("*.json"))
    uploads += run_files
    ops: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=content.encode("utf-8"))
    ]
    ops += [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(export_dir / rel)) for rel in uploads]
    managed = (*(f"{name}/" for name in ours), "tracegen/")
    stale = [f for f in remote_files if f.startswith(managed) and f not in set(uploads)]
    ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
    rows = card_mod.rows_of(pushed)
    message = commit_message or f"tracegen {__version__}: {rows:,} rows ({', '.join(sorted(ours))})"
    try:
        commit = api.create_commit(repo_id, ops, commit_message=message, repo_type="dataset")
        info = api.dataset_info(repo_id)
    except Exception as e:
        errors.raise_for(e, f"uploading to {repo_id}")
    # huggingface_hub skips additions whose remote oid (from preupload) equals the local one
    added = sum(1 for op in ops if isinstance(op, CommitOperationAdd) and op._remote_oid != op._local_oid)
    return PushResult(
        repo_id=repo_id,
        url=f"{base}/datasets/{repo_id}",
        commit_oid=commit.oid,
        commit_url=commit.commit_url,
        private=bool(info.private),
        configs=tuple(str(c["name"]) for c in pushed),
        rows=rows,
        files_added=added,
        files_deleted=len(stale),
    )
