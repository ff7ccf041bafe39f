"""HTTP handlers of the fake server's Files and Batches endpoints (``/v1/files``, ``/v1/batches``), over a
:class:`~tracegen.testing.batches.BatchStore`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .batch_files import BATCH_ENDPOINT, FILE_PURPOSES, MAX_BATCH_FILE_BYTES
from .wire import ApiError, json_response

if TYPE_CHECKING:
    from .batches import BatchStore

__all__ = ["add_batch_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _store(request: web.Request) -> BatchStore:
    from .app import STATE

    st = request.app[STATE]
    st.check_auth(request)
    return st.batches


def _limit(request: web.Request, default: int = 20, most: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if not 1 <= limit <= most:
        raise ApiError(
            400, f"Invalid 'limit': expected an integer in [1, {most}], got {raw!r}.", param="limit"
        )
    return limit


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    start = 0
    if after:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    page = items[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(items),
    }


async def upload_file(request: web.Request) -> web.Response:
    """``POST /v1/files`` (multipart: ``file``, ``purpose``)."""
    store = _store(request)
    form = await request.post()
    upload = form.get("file")
    purpose = form.get("purpose")
    if not isinstance(upload, web.FileField):
        raise ApiError(400, "Missing file: send it as the multipart field 'file'.", param="file")
    if not isinstance(purpose, str) or purpose not in FILE_PURPOSES:
        raise ApiError(
            400, f"Invalid 'purpose' {purpose!r}: expected one of {sorted(FILE_PURPOSES)}.", param="purpose"
        )
    data = upload.file.read()
    if purpose == "batch":
        if not upload.filename.endswith(".jsonl"):
            raise ApiError(400, "A batch input file must be a .jsonl file.", param="file")
        if len(data) > MAX_BATCH_FILE_BYTES:
            raise ApiError(
                400, f"A batch input file holds at most {MAX_BATCH_FILE_BYTES} bytes.", param="file"
            )
    store.state.counters.files_uploaded += 1
    return json_response(store.add_file(upload.filename, purpose, data).obj())


async def list_files(request: web.Request) -> web.Response:
    """``GET /v1/files`` (newest first; ``purpose``, ``after``, ``limit`` up to 10,000)."""
    store = _store(request)
    purpose = request.query.get("purpose")
    items = [f.obj() for f in reversed(store.files.values()) if purpose is None or f.purpose == purpose]
    return json_response(_page(items, request.query.get("after"), _limit(request, 10_000, 10_000)))


async def retrieve_file(request: web.Request) -> web.Response:
    """``GET /v1/files/{file_id}``."""
    return json_response(_store(request).get_file(request.match_info["file_id"]).obj())


async def file_content(request: web.Request) -> web.Response:
    """``GET /v1/files/{file_id}/content``: the raw bytes."""
    stored = _store(request).get_file(request.match_info["file_id"])
    return web.Response(body=stored.data, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.Response:
    """``DELETE /v1/files/{file_id}``."""
    stored = _store(request).delete_file(request.match_info["file_id"])
    return json_response({"id": stored.id, "object": "file", "deleted": True})


async def create_batch(request: web.Request) -> web.Response:
    """``POST /v1/batches``."""
    store = _store(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "We could not parse the JSON body of your request. Send valid JSON.")
    endpoint = body.get("endpoint")
    window = body.get("completion_window")
    file_id = body.get("input_file_id")
    metadata = body.get("metadata")
    if endpoint != BATCH_ENDPOINT:
        raise ApiError(
            400,
            f"Invalid 'endpoint' {endpoint!r}: the fake server batches {BATCH_ENDPOINT} only.",
            param="endpoint",
        )
    if window != "24h":
        raise ApiError(
            400, f"Invalid 'completion_window' {window!r}: expected '24h'.", param="completion_window"
        )
    if not isinstance(file_id, str):
        raise ApiError(
            400, "Missing 'input_file_id'.", param="input_file_id", code="missing_required_parameter"
        )
    stored = store.get_file(file_id)
    if stored.purpose != "batch":
        raise ApiError(
            400,
            f"File {file_id} has purpose {stored.purpose!r}; a batch input needs 'batch'.",
            param="input_file_id",
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(400, "Invalid 'metadata': expected an object of strings.", param="metadata")
    return json_response(store.create(file_id, endpoint, window, metadata).obj())


async def retrieve_batch(request: web.Request) -> web.Response:
    """``GET /v1/batches/{batch_id}``."""
    return json_response(_store(request).get_batch(request.match_info["batch_id"]).obj())


async def cancel_batch(request: web.Request) -> web.Response:
    """``POST /v1/batches/{batch_id}/cancel``."""
    return json_response(_store(request).cancel(request.match_info["batch_id"]).obj())


async def list_batches(request: web.Request) -> web.Response:
    """``GET /v1/batches`` (newest first; ``after``, ``limit`` 1..100, default 20)."""
    store = _store(request)
    items = [job.obj() for job in reversed(store.batches.values())]
    return json_response(_page(items, request.query.get("after"), _limit(request)))


def add_batch_routes(router: web.UrlDispatcher, prefix: str, wrap: Callable[[Handler], Handler]) -> None:
    """Register the Files and Batches routes under ``prefix`` ("/v1" or "")."""
    router.add_post(f"{prefix}/files", wrap(upload_file))
    router.add_get(f"{prefix}/files", wrap(list_files))
    router.add_get(f"{prefix}/files/{{file_id}}", wrap(retrieve_file))
    router.add_get(f"{prefix}/files/{{file_id}}/content", wrap(file_content))
    router.add_delete(f"{prefix}/files/{{file_id}}", wrap(delete_file))
    router.add_post(f"{prefix}/batches", wrap(create_batch))
    router.add_get(f"{prefix}/batches", wrap(list_batches))
    router.add_get(f"{prefix}/batches/{{batch_id}}", wrap(retrieve_batch))
    router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", wrap(cancel_batch))
