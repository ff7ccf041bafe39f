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

Parts: :mod:`.fake_hub_repos` (repos, commits, users, permissions), :mod:`.fake_hub_files` (upload,
listing and download routes), :mod:`.fake_hub_card` (metadata checks); this module serves and routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import yaml
from aiohttp import web

from .fake_hub_card import check_card_metadata
from .fake_hub_files import _FileRoutes
from .fake_hub_repos import (
    _NAME,
    _TYPES,
    _YAML_BLOCK,
    DEFAULT_GITATTRIBUTES,
    FakeCommit,
    _Entry,
    _git_blob_sha1,
    _HubError,
    _json,
    _now,
    _Repo,
    _User,
)

__all__ = ["FakeCommit", "FakeHub", "check_card_metadata"]


# ---- the server ------------------------------------------------------------------------------------------


class FakeHub(_FileRoutes):
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
        super().__init__({token: _User(user, tuple(orgs))}, lfs_threshold_bytes, page_size)
        self._host, self._port = host, port
        self._log: list[tuple[str, str, int]] = []
        self._served: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

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
