"""JSON and OpenAI-style error responses for the fake server."""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from aiohttp import web

__all__ = ["ApiError", "dumps", "error_response", "json_response", "new_id"]

_JSON_HEADERS = {"Content-Type": "application/json"}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique object id such as ``chatcmpl-…``, ``req_…``, ``batch_…``, ``file-…``."""
    return f"{prefix}{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return _dumps(obj).encode("utf-8")


class ApiError(Exception):
    """An error the server answers with OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with ``headers`` added."""
    all_headers = dict(_JSON_HEADERS)
    if headers:
        all_headers.update(headers)
    return web.Response(body=dumps(obj), status=status, headers=all_headers)


def error_response(err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    """The response for ``err``, with ``headers`` (e.g. rate-limit headers) and the error's own headers."""
    merged = dict(headers or {})
    merged.update(err.headers)
    return json_response(err.body(), err.status, merged)
