"""The fake server's gateway mode: answer as a LiteLLM proxy in front of it would (``FakeOptions.gateway``).

Observed on LiteLLM's proxy 1.108 (mocked models, and as a gateway in front of this fake server):

- every error body becomes ``{"error": {"message": "litellm.<Class>: <Class>: OpenAIException - <upstream
  message>\\n\\nLiteLLM: model group '<model>' failed ...", "type": <LiteLLM type>, "param": null, "code":
  "<status>"}}``: the upstream ``code`` and ``type`` are lost -- ``insufficient_quota`` becomes ``code: "429",
  type: "throttling_error"`` and only the message still says "You exceeded your current quota";
- a wrong key, on a proxy without a database, is answered ``400 {"type": "no_db_connection", "message": "No
  connected db."}`` -- not 401;
- the upstream's headers come back prefixed ``llm_provider-`` (``llm_provider-retry-after: 52``).

Here the gateway enforces the rate limit itself, as a proxy with its own limits does: 429s carry only
``llm_provider-retry-after`` (whole seconds) and no answer carries ``x-ratelimit-*`` in any form, so a client
has to find the sustainable rate on its own.
"""

from __future__ import annotations

from .wire import ApiError

__all__ = ["gateway_error", "gateway_headers"]

_CLASS = {
    400: ("BadRequestError", "invalid_request_error"),
    401: ("AuthenticationError", "auth_error"),
    403: ("PermissionDeniedError", "auth_error"),
    404: ("NotFoundError", "not_found_error"),
    408: ("Timeout", "timeout"),
    429: ("RateLimitError", "throttling_error"),
    500: ("InternalServerError", "internal_server_error"),
    503: ("ServiceUnavailableError", "service_unavailable"),
}


def gateway_error(err: ApiError, model: str = "tracegen-fake") -> ApiError:
    """``err`` as LiteLLM's proxy relays it (see the module docs)."""
    if err.status == 401:
        return ApiError(400, "No connected db.", type="no_db_connection", code="400")
    name, etype = _CLASS.get(err.status, ("APIError", "api_error"))
    message = (
        f"litellm.{name}: {name}: OpenAIException - {err.message}\n\n"
        f"LiteLLM: model group '{model}' failed with the error above. No fallback was attempted."
    )
    headers: dict[str, str] = {}
    retry_after = err.headers.get("retry-after")
    if retry_after:
        headers["llm_provider-retry-after"] = retry_after
    return ApiError(err.status, message, type=etype, code=str(err.status), headers=headers)


def gateway_headers(headers: dict[str, str]) -> dict[str, str]:
    """Answer headers without any ``x-ratelimit-*`` / ``retry-after*`` (the gateway's own limits are secret)."""
    return {
        k: v
        for k, v in headers.items()
        if not k.lower().startswith(("x-ratelimit-", "retry-after", "llm_provider-x-ratelimit-"))
    }
