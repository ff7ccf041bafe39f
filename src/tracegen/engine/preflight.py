"""Checks before a run plans anything: is there a key, and does the endpoint answer?

Planning can take minutes (it streams the Hub by default), so a run that cannot reach its teacher should
say so first. :func:`check_keys` needs no network: a missing key (and no local base URL) is an AuthError.
:func:`check_endpoint` sends one ``GET /models`` (free: it bills no tokens): a refused key (401/403) is an
AuthError, an endpoint that cannot be reached an EndpointError. Anything else (a 404 from a server without
``/models``, a slow answer) lets the run go on: the engine's first wave decides.

The check also measures the endpoint's round trip (:func:`round_trip_s`): the engine's first wave waits for
errors only a few round trips, not a fixed half second, before it opens full concurrency.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

from ..config import RunConfig
from ..errors import AuthError, EndpointError
from ..redact import redact_url
from .client import Endpoint, resolve_endpoint

__all__ = ["check_endpoint", "check_keys", "round_trip_s"]

TIMEOUT_S = 5.0

#: The last measured ``GET /models`` round trip (connection included) per endpoint, seconds.
_ROUND_TRIPS: dict[str, float] = {}


def _url_key(base_url: str) -> str:
    return redact_url(base_url).rstrip("/")


def round_trip_s(base_url: str) -> float | None:
    """The round trip :func:`check_endpoint` measured to ``base_url`` in this process, or None."""
    return _ROUND_TRIPS.get(_url_key(base_url))


def _endpoints(config: RunConfig, env: Mapping[str, str]) -> list[Endpoint]:
    urls = [s.base_url for s in config.stages] or [None]
    return [resolve_endpoint(config.model_copy(update={"base_url": u or config.base_url}), env) for u in urls]


def check_keys(config: RunConfig, env: Mapping[str, str] | None = None) -> None:
    """Raise AuthError when a teacher the run would ask has no key (and no local base URL). No network."""
    env = os.environ if env is None else env
    if config.endpoints:
        for e in config.endpoints:
            if e.api_key_env and not env.get(e.api_key_env):
                raise AuthError(
                    f"endpoint {e.label()}: environment variable {e.api_key_env} is not set; export it with "
                    "this endpoint's key (or set api_key_env: null for a server that needs none)"
                )
        return
    _endpoints(config, env)


def check_endpoint(config: RunConfig, env: Mapping[str, str] | None = None) -> None:
    """One ``GET /models`` per endpoint the run asks first (not for endpoint pools: they ease off on their own)."""
    env = os.environ if env is None else env
    if config.endpoints or config.mode == "batch":
        return
    seen: set[str] = set()
    for endpoint in _endpoints(config, env):
        if endpoint.base_url in seen:
            continue
        seen.add(endpoint.base_url)
        _get_models(endpoint)


def _get_models(endpoint: Endpoint) -> None:
    url = endpoint.base_url + "/models"
    headers = {"Accept": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    request = urllib.request.Request(url, headers=headers, method="GET")
    where = redact_url(endpoint.base_url)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S):
            _ROUND_TRIPS[_url_key(endpoint.base_url)] = time.monotonic() - t0
            return
    except urllib.error.HTTPError as e:
        _ROUND_TRIPS[_url_key(endpoint.base_url)] = time.monotonic() - t0
        if e.code in (401, 403):
            raise AuthError(
                f"{where} refused the API key (HTTP {e.code} at GET /models): check OPENAI_API_KEY "
                "(and that it belongs to this endpoint)"
            ) from None
        return  # a server without /models, or another answer: the engine's probe decides
    except TimeoutError:
        return
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            return
        text = getattr(reason, "strerror", None) or str(reason)
        raise EndpointError(
            f"cannot reach {where} ({text}); check --base-url / OPENAI_BASE_URL and the network "
            "(or rehearse offline with `tracegen run --rehearse`)"
        ) from None
    except OSError as e:
        raise EndpointError(
            f"cannot reach {where} ({e.strerror or e}); check --base-url / OPENAI_BASE_URL"
        ) from None
