"""The fake Hub's file routes: preupload, git-LFS transfer, commits, tree listing, paths-info and downloads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from .fake_hub_card import check_card_metadata
from .fake_hub_repos import _Entry, _git_blob_sha1, _HubError, _HubState, _json, _parse_range, _User


class _FileRoutes(_HubState):
    """Uploads (preupload, LFS batch/upload/verify, commit) and reads (tree, paths-info, resolve)."""

    # ---- uploads ------------------------------------------------------------------------------------------

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
