"""The fake Hub's data: repos, commits, trees, users and the rules that read them, without HTTP.

:class:`_HubState` is :class:`tracegen.testing.fake_hub.FakeHub`'s base: the HTTP routes live in
:mod:`.fake_hub_files` and :mod:`.fake_hub`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

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


class _HubState:
    """The Hub's repos, blobs and users, and the rules that read them (permissions, revisions, LFS, history)."""

    def __init__(self, users: dict[str, _User], lfs_threshold_bytes: int, page_size: int) -> None:
        self._users = users
        self.lfs_threshold_bytes = lfs_threshold_bytes
        self.page_size = page_size
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._secret = secrets.token_bytes(16)
        self.endpoint = ""

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
