"""A local Hugging Face Hub that speaks the Hub's HTTP protocol, for tests and offline rehearsals.

::

    from tracegen.testing.fake_hub import FakeHub

    with FakeHub(token="hf_test", user="tester", orgs=("tracegen-org",)) as hub:
        hub.endpoint                          # "http://127.0.0.1:PORT": set HF_ENDPOINT to it
        HfApi(endpoint=hub.endpoint, token="hf_test").create_repo("tester/x", repo_type="dataset")
        hub.files("tester/x")                 # {path: bytes} at main
        hub.commits("tester/x")               # [FakeCommit, ...] oldest first

It runs aiohttp in a background thread on 127.0.0.1 and keeps repos in memory. What it implements (read from
huggingface_hub's client code, version 2.x):

- ``GET /api/whoami-v2``; ``POST /api/repos/create`` (409 when it exists, 403 outside your namespaces);
  ``DELETE /api/repos/delete``;
- ``GET /api/{type}s/{id}`` and ``/api/{type}s/{id}/revision/{rev}`` (sha, private, siblings, cardData);
- ``POST /api/{type}s/{id}/preupload/{rev}``: ``lfs`` for files matching the repo's ``.gitattributes``
  LFS patterns (``*.parquet`` ...), binary samples or files over ``lfs_threshold_bytes``, else ``regular``;
  returns the current ``oid`` of each path so unchanged files are skipped by the client;
- git-LFS basic transfer: ``POST /{type}s/{id}.git/info/lfs/objects/batch`` → signed ``PUT`` upload URLs
  (checked against the sha256) and a ``verify`` action;
- ``POST /api/{type}s/{id}/commit/{rev}`` (ndjson: header, file, lfsFile, deletedFile, deletedFolder; checks
  ``parentCommit``, missing LFS objects, missing deletions and the README metadata);
- ``GET /api/{type}s/{id}/tree/{rev}/{path}`` (recursive, expand, cursor pagination with a ``Link``
  header) and ``POST .../paths-info/{rev}``;
- ``GET|HEAD /{type}s/{id}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag`` /
  ``X-Linked-Size`` for LFS files, ``Content-Length`` and single ``Range`` requests (206);
- ``POST /api/validate-yaml``: YAML syntax, a mapping, the Hub's license ids, size buckets, list-typed keys,
  ``configs`` / ``dataset_info`` structure (errors → 400; unknown task categories → warnings);
- auth as the Hub does it: a wrong token is 401 everywhere; private or missing repos are 401 without a token
  and 404 with one (``X-Error-Code: RepoNotFound``); writing outside your namespaces is 403.

Errors carry the Hub's ``X-Error-Code`` / ``X-Error-Message`` headers and a JSON ``{"error": ...}`` body, so
huggingface_hub raises its usual exception classes. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote, urlencode

import yaml
from aiohttp import web

from ..publish.card import HUB_LICENSES, SIZE_CATEGORIES

__all__ = ["FakeCommit", "FakeHub", "check_card_metadata"]

DEFAULT_GITATTRIBUTES = (
    "*.7z filter=lfs diff=lfs merge=lfs -text\n"
    "*.arrow filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.gz filter=lfs diff=lfs merge=lfs -text\n"
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.zip filter=lfs diff=lfs merge=lfs -text\n"
    "*.zst filter=lfs diff=lfs merge=lfs -text\n"
)
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_NAME = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
_TASKS = """text-generation question-answering text-classification token-classification summarization
    translation
    text2text-generation fill-mask zero-shot-classification sentence-similarity feature-extraction
    table-question-answering multiple-choice conversational text-retrieval other"""
_KNOWN_TASKS = frozenset(_TASKS.split())
_LIST_KEYS = (
    "tags",
    "task_categories",
    "task_ids",
    "size_categories",
    "annotations_creators",
    "language_creators",
    "multilinguality",
    "source_datasets",
    "language_details",
)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class _Entry:
    """A file in a commit's tree."""

    size: int
    sha256: str
    lfs: bool
    git_oid: str
    pointer_size: int = 0


@dataclass(frozen=True)
class FakeCommit:
    """One commit: its id, title and the full tree (path → entry)."""

    oid: str
    title: str
    description: str
    date: str
    tree: Mapping[str, _Entry]
    parent: str | None


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: list[FakeCommit] = field(default_factory=list)
    lfs_objects: set[str] = field(default_factory=set)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]

    @property
    def head(self) -> FakeCommit:
        return self.commits[-1]


@dataclass(frozen=True)
class _User:
    name: str
    orgs: tuple[str, ...]

    def owns(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


# ---- card metadata checks (what /api/validate-yaml enforces) ---------------------------------------------


def _str_or_list(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value))


def _check_data_files(where: str, value: Any, errors: list[str]) -> None:
    if _str_or_list(value):
        return
    if not isinstance(value, list):
        errors.append(f'"{where}.data_files" must be a string or an array')
        return
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("split"), str)
            or not _str_or_list(item.get("path"))
        ):
            errors.append(f'"{where}.data_files" items must be {{split: string, path: string | string[]}}')
            return


def _check_configs(value: Any, errors: list[str]) -> None:
    if not isinstance(value, list):
        errors.append('"configs" must be an array')
        return
    seen: set[str] = set()
    for i, cfg in enumerate(value):
        where = f"configs[{i}]"
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
            errors.append(f'"{where}.config_name" is required and must be a string')
            continue
        if cfg["config_name"] in seen:
            errors.append(f'"{where}.config_name" {cfg["config_name"]!r} is duplicated')
        seen.add(cfg["config_name"])
        if "data_files" in cfg:
            _check_data_files(where, cfg["data_files"], errors)
        if "data_dir" in cfg and not isinstance(cfg["data_dir"], str):
            errors.append(f'"{where}.data_dir" must be a string')
        if "default" in cfg and not isinstance(cfg["default"], bool):
            errors.append(f'"{where}.default" must be a boolean')


def _check_dataset_info(value: Any, errors: list[str]) -> None:
    infos = value if isinstance(value, list) else [value]
    for i, info in enumerate(infos):
        where = f"dataset_info[{i}]" if isinstance(value, list) else "dataset_info"
        if not isinstance(info, dict):
            errors.append(f'"{where}" must be an object')
            continue
        if "features" in info and not isinstance(info["features"], (list, dict)):
            errors.append(f'"{where}.features" must be an array')
        for split in info.get("splits") or []:
            if not isinstance(split, dict) or not isinstance(split.get("name"), str):
                errors.append(f'"{where}.splits" items need a string "name"')
            elif any(k in split and not isinstance(split[k], int) for k in ("num_bytes", "num_examples")):
                errors.append(f'"{where}.splits" num_bytes / num_examples must be integers')


def check_card_metadata(content: str, repo_type: str = "dataset") -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's YAML metadata, the checks ``/api/validate-yaml`` makes."""
    match = _YAML_BLOCK.search(content)
    if match is None:
        return [], ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(match.group(2))
    except yaml.YAMLError as e:
        return [f"Invalid YAML in metadata: {e}"], []
    if meta is None:
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML object (key: value)"], []
    errors: list[str] = []
    warnings: list[str] = []
    lic = meta.get("license")
    if lic is not None and not (
        (isinstance(lic, str) and lic in HUB_LICENSES)
        or (isinstance(lic, list) and lic and all(isinstance(x, str) and x in HUB_LICENSES for x in lic))
    ):
        errors.append('"license" must be one of [' + ", ".join(sorted(HUB_LICENSES)) + "]")
    if "language" in meta:
        langs = meta["language"]
        if not _str_or_list(langs):
            errors.append('"language" must be a string or an array of strings')
        else:
            for lang in [langs] if isinstance(langs, str) else langs:
                if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)*|code|multilingual", lang):
                    errors.append(f'"language" {lang!r} is not an ISO 639-1/2/3 code')
    for key in _LIST_KEYS:
        if key in meta and not _str_or_list(meta[key]):
            errors.append(f'"{key}" must be an array of strings')
    buckets = {name for name, _ in SIZE_CATEGORIES} | {"other"}
    sizes = meta.get("size_categories")
    for size in [sizes] if isinstance(sizes, str) else sizes if isinstance(sizes, list) else []:
        if size not in buckets:
            errors.append(
                f'"size_categories" must be one of [{", ".join(n for n, _ in SIZE_CATEGORIES)}, other]'
            )
    tasks = meta.get("task_categories")
    for task in [tasks] if isinstance(tasks, str) else tasks if isinstance(tasks, list) else []:
        if isinstance(task, str) and task not in _KNOWN_TASKS:
            warnings.append(f'"task_categories" {task!r} is not a known task category')
    for key in ("pretty_name", "license_name", "license_link", "paperswithcode_id"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    if "configs" in meta:
        _check_configs(meta["configs"], errors)
    if "dataset_info" in meta:
        _check_dataset_info(meta["dataset_info"], errors)
    if repo_type not in ("dataset", "model", "space"):
        errors.append(f'"repoType" must be one of dataset, model, space, not {repo_type!r}')
    return errors, warnings


# ---- the server ------------------------------------------------------------------------------------------


class FakeHub:
    """A Hub-protocol server in a background thread. Use as a context manager."""

    def __init__(
        self,
        token: str = "hf_test",
        *,
        user: str = "tester",
        orgs: Sequence[str] = ("tracegen-org",),
        lfs_threshold_bytes: int = 10 * 1024 * 1024,
        page_size: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._users: dict[str, _User] = {token: _User(user, tuple(orgs))}
        self.lfs_threshold_bytes = lfs_threshold_bytes
        self.page_size = page_size
        self._host, self._port = host, port
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._log: list[tuple[str, str, int]] = []
        self._served: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(16)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        """Start serving; ``endpoint`` is set when this returns."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # surfaced to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-hub", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://{self._host}:{port}"

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- inspection (thread-safe) -------------------------------------------------------------------------

    def add_token(self, token: str, user: str, orgs: Sequence[str] = ()) -> None:
        """Accept another token, for another user."""
        with self._lock:
            self._users[token] = _User(user, tuple(orgs))

    def repo_ids(self, repo_type: str = "dataset") -> list[str]:
        with self._lock:
            return sorted(rid for (t, rid) in self._repos if t == repo_type)

    def is_private(self, repo_id: str, repo_type: str = "dataset") -> bool:
        with self._lock:
            return self._repos[(repo_type, repo_id)].private

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[FakeCommit]:
        """The repo's commits, oldest first."""
        with self._lock:
            return list(self._repos[(repo_type, repo_id)].commits)

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """Every file's content at ``revision``."""
        with self._lock:
            commit = self._commit_at(self._repos[(repo_type, repo_id)], revision)
            return {p: self._blobs[e.sha256] for p, e in sorted(commit.tree.items())}

    def add_dataset(
        self, repo_id: str, files: Mapping[str, bytes], *, private: bool = False, title: str = "seed"
    ) -> FakeCommit:
        """Create (or add a commit to) dataset ``repo_id`` holding ``files``, without going through HTTP.

        For replicas of public datasets (any namespace); ``*.parquet`` and other binary files are LFS.
        """
        with self._lock:
            key = ("dataset", repo_id)
            repo = self._repos.get(key)
            if repo is None:
                repo = self._repos[key] = _Repo("dataset", repo_id, private, _now())
            tree = dict(repo.commits[-1].tree) if repo.commits else {}
            gitattributes = DEFAULT_GITATTRIBUTES.encode()
            patterns = [line.split()[0] for line in DEFAULT_GITATTRIBUTES.splitlines() if line.strip()]
            for path, data in {".gitattributes": gitattributes, **files}.items():
                sha = hashlib.sha256(data).hexdigest()
                self._blobs[sha] = data
                lfs = self._wants_lfs(path, len(data), data[:512], patterns)
                if lfs:
                    repo.lfs_objects.add(sha)
                tree[path] = _Entry(len(data), sha, lfs, _git_blob_sha1(data), 134 if lfs else 0)
            commit = self._new_commit(repo, title, "", tree)
            repo.commits.append(commit)
            return commit

    def bytes_served(self, path_contains: str = "/resolve/") -> int:
        """Body bytes sent by responses whose path contains ``path_contains`` (file downloads by default)."""
        with self._lock:
            return sum(n for p, n in self._served if path_contains in p)

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request served, in order (no headers, no tokens)."""
        with self._lock:
            return list(self._log)

    # ---- dispatch -----------------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segs = [unquote(s) for s in request.rel_url.raw_path.split("/")[1:]]
        try:
            body = await request.read()
            with self._lock:
                user = self._auth(request)
                response = self._route(request, segs, body, user)
        except _HubError as e:
            response = web.json_response({"error": e.message}, status=e.status)
            response.headers["X-Error-Message"] = e.message.replace("\n", " ")[:500]
            if e.code:
                response.headers["X-Error-Code"] = e.code
        with self._lock:
            self._log.append((request.method, request.rel_url.path, response.status))
            body_out = response.body if isinstance(response, web.Response) else None
            if request.method == "GET" and isinstance(body_out, bytes):
                self._served.append((request.rel_url.path, len(body_out)))
        return response

    def _auth(self, request: web.Request) -> _User | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        user = self._users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return user

    def _route(self, req: web.Request, s: list[str], body: bytes, user: _User | None) -> web.StreamResponse:
        m = req.method
        if s[:2] == ["api", "whoami-v2"] and m == "GET":
            return self._whoami(user)
        if s[:3] == ["api", "repos", "create"] and m == "POST":
            return self._create(_json(body), user)
        if s[:3] == ["api", "repos", "delete"] and m == "DELETE":
            return self._delete(_json(body), user)
        if s[:2] == ["api", "validate-yaml"] and m == "POST":
            return self._validate_yaml(req, _json(body))
        if len(s) >= 4 and s[0] == "api" and s[1] in _TYPES:
            repo_type, repo_id, rest = _TYPES[s[1]], f"{s[2]}/{s[3]}", s[4:]
            if not rest and m == "GET":
                return self._info(repo_type, repo_id, "main", req, user)
            if len(rest) >= 2:
                action, rev, path = rest[0], rest[1], "/".join(rest[2:])
                if action == "revision" and m == "GET":
                    return self._info(repo_type, repo_id, rev, req, user)
                if action == "preupload" and m == "POST":
                    return self._preupload(repo_type, repo_id, rev, _json(body), user)
                if action == "commit" and m == "POST":
                    return self._commit(repo_type, repo_id, rev, body, req, user)
                if action == "tree" and m == "GET":
                    return self._tree(repo_type, repo_id, rev, path, req, user)
                if action == "paths-info" and m == "POST":
                    return self._paths_info(repo_type, repo_id, rev, req, body, user)
        if len(s) >= 7 and s[0] == "_lfs" and s[1] in ("upload", "verify"):
            repo_type, repo_id, oid = _TYPES.get(s[2], ""), f"{s[3]}/{s[4]}", s[5]
            if s[1] == "upload" and m == "PUT":
                return self._lfs_upload(repo_type, repo_id, oid, s[6], body)
            if s[1] == "verify" and m == "POST":
                return self._lfs_verify(repo_type, repo_id, oid, _json(body), user)
        prefix, s2 = (_TYPES[s[0]], s[1:]) if s and s[0] in _TYPES else ("model", s)
        if len(s2) >= 6 and s2[1].endswith(".git") and s2[2:6] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(prefix, f"{s2[0]}/{s2[1][:-4]}", _json(body), user)
        if len(s2) >= 5 and s2[2] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(prefix, f"{s2[0]}/{s2[1]}", s2[3], "/".join(s2[4:]), req, user)
        raise _HubError(
            404, f"Sorry, we can't find the page you are looking for: {req.method} {req.rel_url.path}"
        )

    # ---- repos and permissions ----------------------------------------------------------------------------

    def _readable(self, repo_type: str, repo_id: str, user: _User | None) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and (user is None or not user.owns(repo.namespace))):
            if user is None:
                raise _HubError(401, "Repository not found", "RepoNotFound")
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo_type: str, repo_id: str, user: _User | None) -> _Repo:
        if user is None:
            raise _HubError(401, "You must be authenticated to access this resource")
        repo = self._readable(repo_type, repo_id, user)
        if not user.owns(repo.namespace):
            raise _HubError(403, f"You don't have write access to {repo_type} repo {repo_id}")
        return repo

    def _commit_at(self, repo: _Repo, revision: str) -> FakeCommit:
        if revision == "main":
            return repo.head
        for c in repo.commits:
            if c.oid == revision:
                return c
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _whoami(self, user: _User | None) -> web.Response:
        if user is None:
            raise _HubError(401, "You must be authenticated to access this resource")
        return web.json_response(
            {
                "type": "user",
                "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
                "name": user.name,
                "fullname": user.name,
                "orgs": [{"type": "org", "name": o, "roleInOrg": "write"} for o in user.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            }
        )

    def _create(self, data: dict[str, Any], user: _User | None) -> web.Response:
        if user is None:
            raise _HubError(401, "You must be authenticated to access this resource")
        name, org = data.get("name"), data.get("organization")
        repo_type = data.get("type") or "model"
        if (
            not isinstance(name, str)
            or not _NAME.match(name)
            or (org is not None and not _NAME.match(str(org)))
        ):
            raise _HubError(400, "Repository name is invalid: use letters, digits, '-', '_' and '.'")
        if repo_type not in ("model", "dataset", "space"):
            raise _HubError(400, f"Invalid repo type {repo_type!r}")
        namespace = org or user.name
        if not user.owns(namespace):
            raise _HubError(
                403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"'
            )
        repo_id = f"{namespace}/{name}"
        url = self._repo_url(repo_type, repo_id)
        if (repo_type, repo_id) in self._repos:
            return web.json_response(
                {"error": f"You already created this {repo_type} repo", "url": url}, status=409
            )
        visibility = data.get("visibility")
        private = visibility == "private" if visibility is not None else bool(data.get("private", False))
        repo = _Repo(repo_type, repo_id, private, _now())
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        self._blobs.setdefault(hashlib.sha256(gitattributes).hexdigest(), gitattributes)
        entry = _Entry(
            len(gitattributes),
            hashlib.sha256(gitattributes).hexdigest(),
            False,
            _git_blob_sha1(gitattributes),
        )
        repo.commits.append(self._new_commit(repo, "initial commit", "", {".gitattributes": entry}))
        self._repos[(repo_type, repo_id)] = repo
        return web.json_response({"url": url, "name": repo_id, "id": repo_id})

    def _delete(self, data: dict[str, Any], user: _User | None) -> web.Response:
        repo_type = data.get("type") or "model"
        namespace = data.get("organization") or (user.name if user else "")
        repo = self._writable(repo_type, f"{namespace}/{data.get('name')}", user)
        del self._repos[(repo.repo_type, repo.repo_id)]
        return web.Response(status=200)

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    def _new_commit(self, repo: _Repo, title: str, description: str, tree: dict[str, _Entry]) -> FakeCommit:
        parent = repo.commits[-1].oid if repo.commits else None
        digest = hashlib.sha1()
        digest.update(f"{parent}\n{title}\n{description}\n{len(repo.commits)}\n".encode())
        for path, e in sorted(tree.items()):
            digest.update(f"{path}\0{e.git_oid}\n".encode())
        return FakeCommit(digest.hexdigest(), title, description, _now(), dict(tree), parent)

    def _info(
        self, repo_type: str, repo_id: str, rev: str, req: web.Request, user: _User | None
    ) -> web.Response:
        repo = self._readable(repo_type, repo_id, user)
        commit = self._commit_at(repo, rev)
        blobs = req.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, e in sorted(commit.tree.items()):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib |= {"size": e.size, "blobId": e.git_oid}
                if e.lfs:
                    sib["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
            siblings.append(sib)
        card = {}
        if "README.md" in commit.tree:
            match = _YAML_BLOCK.search(
                self._blobs[commit.tree["README.md"].sha256].decode("utf-8", "replace")
            )
            with contextlib.suppress(yaml.YAMLError):
                loaded = yaml.safe_load(match.group(2)) if match else None
                card = loaded if isinstance(loaded, dict) else {}
        return web.json_response(
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo.namespace,
                "sha": commit.oid,
                "createdAt": repo.created_at,
                "lastModified": commit.date,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [str(t) for t in card["tags"]] if isinstance(card.get("tags"), list) else [],
                "cardData": card,
                "siblings": siblings,
                "usedStorage": sum(e.size for e in commit.tree.values()),
            }
        )

    # ---- uploads ------------------------------------------------------------------------------------------

    def _lfs_patterns(self, commit: FakeCommit) -> list[str]:
        entry = commit.tree.get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in self._blobs[entry.sha256].decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def _wants_lfs(self, path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
        name = path.rsplit("/", 1)[-1]
        matched = any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns)
        return matched or size >= self.lfs_threshold_bytes or b"\0" in sample

    def _preupload(
        self, repo_type: str, repo_id: str, rev: str, data: dict[str, Any], user: _User | None
    ) -> web.Response:
        repo = self._writable(repo_type, repo_id, user)
        commit = self._commit_at(repo, rev)
        patterns = self._lfs_patterns(commit)
        out = []
        for f in data.get("files") or []:
            path, size = str(f.get("path")), int(f.get("size", 0))
            sample = base64.b64decode(f.get("sample") or "")
            lfs = self._wants_lfs(path, size, sample, patterns)
            info: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
            }
            existing = commit.tree.get(path)
            if existing is not None:
                info["oid"] = existing.sha256 if existing.lfs else existing.git_oid
            out.append(info)
        return web.json_response({"files": out, "commitOid": commit.oid})

    def _sign(self, repo_type: str, repo_id: str, oid: str) -> str:
        return hmac.new(self._secret, f"{repo_type}/{repo_id}/{oid}".encode(), hashlib.sha256).hexdigest()[
            :32
        ]

    def _lfs_batch(
        self, repo_type: str, repo_id: str, data: dict[str, Any], user: _User | None
    ) -> web.Response:
        repo = self._writable(repo_type, repo_id, user)
        if data.get("operation") != "upload":
            raise _HubError(400, "only the upload operation is supported by this fake")
        objects = []
        for obj in data.get("objects") or []:
            oid, size = str(obj.get("oid")), obj.get("size")
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int):
                item["error"] = {"code": 422, "message": "invalid oid or size"}
            elif oid not in repo.lfs_objects:
                base = f"{self.endpoint}/_lfs/{{}}/{repo_type}s/{quote(repo_id, safe='/')}/{oid}"
                item["actions"] = {
                    "upload": {"href": base.format("upload") + f"/{self._sign(repo_type, repo_id, oid)}"},
                    "verify": {"href": base.format("verify") + "/v"},
                }
            objects.append(item)
        response = web.json_response({"transfer": "basic", "objects": objects})
        response.content_type = "application/vnd.git-lfs+json"
        return response

    def _lfs_upload(self, repo_type: str, repo_id: str, oid: str, sig: str, body: bytes) -> web.Response:
        if not hmac.compare_digest(sig, self._sign(repo_type, repo_id, oid)):
            raise _HubError(403, "Invalid upload signature")
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, "Uploaded content does not match its sha256 oid")
        self._blobs[oid] = body
        repo.lfs_objects.add(oid)
        return web.Response(status=200)

    def _lfs_verify(
        self, repo_type: str, repo_id: str, oid: str, data: dict[str, Any], user: _User | None
    ) -> web.Response:
        repo = self._writable(repo_type, repo_id, user)
        if oid not in repo.lfs_objects or len(self._blobs[oid]) != data.get("size"):
            raise _HubError(404, f"LFS object {oid} was not uploaded")
        return web.Response(status=200)

    def _commit(
        self, repo_type: str, repo_id: str, rev: str, body: bytes, req: web.Request, user: _User | None
    ) -> web.Response:
        repo = self._writable(repo_type, repo_id, user)
        if req.query.get("create_pr"):
            raise _HubError(400, "pull requests are not supported by this fake")
        if rev != "main":
            raise _HubError(400, f"can only commit to the main branch, not {rev!r}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "the first ndjson line must be the commit header")
        header = lines[0].get("value") or {}
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary:
            raise _HubError(400, "commit summary is required")
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.head.oid:
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.head.tree)
        for op in lines[1:]:
            key, value = op.get("key"), op.get("value") or {}
            path = str(value.get("path", ""))
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise _HubError(400, f"invalid path {path!r}")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(400, "file content must be base64")
                content = base64.b64decode(value.get("content") or "")
                sha = hashlib.sha256(content).hexdigest()
                self._blobs.setdefault(sha, content)
                tree[path] = _Entry(len(content), sha, False, _git_blob_sha1(content))
            elif key == "lfsFile":
                oid = str(value.get("oid"))
                if oid not in repo.lfs_objects:
                    raise _HubError(
                        422,
                        f"Your push was rejected because an LFS pointer pointed to a file that does not "
                        f"exist ({path})",
                    )
                size = len(self._blobs[oid])
                pointer = (
                    f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()
                )
                tree[path] = _Entry(size, oid, True, _git_blob_sha1(pointer), len(pointer))
            elif key == "deletedFile":
                if path not in tree:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del tree[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in tree if p.startswith(prefix)]
                if not doomed:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del tree[p]
            else:
                raise _HubError(400, f"unknown commit operation {key!r}")
        if "README.md" in tree:
            errors, _ = check_card_metadata(
                self._blobs[tree["README.md"].sha256].decode("utf-8", "replace"), repo_type
            )
            if errors:
                raise _HubError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
        commit = self._new_commit(repo, summary, str(header.get("description") or ""), tree)
        repo.commits.append(commit)
        url = self._repo_url(repo_type, repo_id)
        return web.json_response(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{url}/commit/{commit.oid}",
                "commitMessage": summary,
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    # ---- listing and downloads ----------------------------------------------------------------------------

    def _last_commit(self, repo: _Repo, upto: FakeCommit, path: str, is_dir: bool) -> dict[str, str]:
        idx = repo.commits.index(upto)

        def view(c: FakeCommit) -> Any:
            if not is_dir:
                return c.tree.get(path)
            prefix = path + "/" if path else ""
            return sorted((p, e.git_oid) for p, e in c.tree.items() if p.startswith(prefix))

        found = upto
        for i in range(idx, 0, -1):
            if view(repo.commits[i]) != view(repo.commits[i - 1]):
                found = repo.commits[i]
                break
        else:
            found = repo.commits[0]
        return {"id": found.oid, "title": found.title, "date": found.date}

    def _entries(
        self, repo: _Repo, commit: FakeCommit, paths: list[str], expand: bool
    ) -> list[dict[str, Any]]:
        dirs = {"/".join(p.split("/")[:i]) for p in commit.tree for i in range(1, p.count("/") + 1)}
        out: list[dict[str, Any]] = []
        for path in paths:
            if path in commit.tree:
                e = commit.tree[path]
                item: dict[str, Any] = {"type": "file", "oid": e.git_oid, "size": e.size, "path": path}
                if e.lfs:
                    item["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
            elif path in dirs:
                oid = hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest()
                item = {"type": "directory", "oid": oid, "size": 0, "path": path}
            else:
                continue
            if expand:
                item["lastCommit"] = self._last_commit(repo, commit, path, item["type"] == "directory")
            out.append(item)
        return out

    def _tree(
        self, repo_type: str, repo_id: str, rev: str, path: str, req: web.Request, user: _User | None
    ) -> web.Response:
        repo = self._readable(repo_type, repo_id, user)
        commit = self._commit_at(repo, rev)
        path = path.strip("/")
        recursive = req.query.get("recursive", "").lower() in ("1", "true")
        expand = req.query.get("expand", "").lower() in ("1", "true")
        prefix = path + "/" if path else ""
        if path and path in commit.tree:
            raise _HubError(404, f"{path} is a file, not a directory", "EntryNotFound")
        under = [p for p in commit.tree if p.startswith(prefix)]
        if path and not under:
            raise _HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        names: set[str] = set()
        for p in under:
            parts = p[len(prefix) :].split("/")
            if recursive:
                names.update(prefix + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
            else:
                names.add(prefix + parts[0])
        listing = self._entries(repo, commit, sorted(names), expand)
        cursor = int(req.query.get("cursor", "0") or 0)
        page = listing[cursor : cursor + self.page_size]
        response = web.json_response(page)
        if cursor + self.page_size < len(listing):
            query = dict(req.query) | {"cursor": str(cursor + self.page_size)}
            response.headers["Link"] = (
                f'<{self.endpoint}{req.rel_url.raw_path}?{urlencode(query)}>; rel="next"'
            )
        return response

    def _paths_info(
        self, repo_type: str, repo_id: str, rev: str, req: web.Request, body: bytes, user: _User | None
    ) -> web.Response:
        repo = self._readable(repo_type, repo_id, user)
        commit = self._commit_at(repo, rev)
        if req.content_type == "application/json":
            data = _json(body)
            paths, expand = list(data.get("paths") or []), bool(data.get("expand"))
        else:
            from urllib.parse import parse_qs

            form = parse_qs(body.decode("utf-8"))
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
        return web.json_response(self._entries(repo, commit, [str(p).strip("/") for p in paths], expand))

    def _resolve(
        self, repo_type: str, repo_id: str, rev: str, path: str, req: web.Request, user: _User | None
    ) -> web.Response:
        repo = self._readable(repo_type, repo_id, user)
        commit = self._commit_at(repo, rev)
        entry = commit.tree.get(path)
        if entry is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = self._blobs[entry.sha256]
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.sha256 if entry.lfs else entry.git_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.lfs:
            headers |= {"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}
        rng = req.headers.get("Range")
        if rng:
            start, end = _parse_range(rng, len(data))
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return web.Response(status=206, body=data[start : end + 1], headers=headers)
        return web.Response(status=200, body=data, headers=headers)

    def _validate_yaml(self, req: web.Request, data: dict[str, Any]) -> web.Response:
        content = data.get("content")
        if not isinstance(content, str):
            raise _HubError(400, '"content" must be a string')
        errors, warnings = check_card_metadata(content, str(data.get("repoType") or "model"))
        status = 400 if errors else 200
        if errors and "text/plain" in req.headers.get("Accept", ""):
            return web.Response(status=400, text="\n".join(errors))
        response = web.json_response(
            {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]},
            status=status,
        )
        if errors:
            response.headers["X-Error-Message"] = errors[0][:500]
        return response


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise _HubError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _HubError(400, "request body must be a JSON object")
    return data


def _parse_range(header: str, size: int) -> tuple[int, int]:
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise _HubError(416, f"unsupported Range {header!r}")
    if not m.group(1):
        start, end = max(size - int(m.group(2)), 0), size - 1
    else:
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or start > end:
        raise _HubError(416, f"Range {header!r} not satisfiable for {size} bytes")
    return start, end
