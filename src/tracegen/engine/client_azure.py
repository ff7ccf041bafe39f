"""The aiohttp client on Azure OpenAI's URL shape and ``api-key`` header (endpoint pools' Azure members)."""

from __future__ import annotations

from urllib.parse import quote

from .client import Endpoint
from .client_aiohttp import AiohttpChatClient

__all__ = ["AzureChatClient"]


class AzureChatClient(AiohttpChatClient):
    """The aiohttp client on Azure OpenAI's URL shape and ``api-key`` header.

    URL: ``{base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}``.
    """

    def __init__(
        self, endpoint: Endpoint, *, deployment: str, api_version: str, concurrency: int, timeout_s: float
    ) -> None:
        super().__init__(Endpoint(base_url=endpoint.base_url), concurrency=concurrency, timeout_s=timeout_s)
        self._endpoint = endpoint  # for redaction of error messages
        base = endpoint.base_url.rstrip("/")
        self._url = (
            f"{base}/openai/deployments/{quote(deployment, safe='')}/chat/completions"
            f"?api-version={quote(api_version, safe='')}"
        )
        if endpoint.api_key:
            self._headers["api-key"] = endpoint.api_key
