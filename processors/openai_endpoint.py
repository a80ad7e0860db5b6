"""One way to reach an OpenAI-protocol endpoint (LLM, STT, TTS): its client, limits and faults.

Every stage that talks to such an endpoint (OpenAI, Ollama, llama.cpp, vLLM,
any compatible server) builds its client here, so they agree on the key a
local server is given, on the connect limit, on leaving retries to Nabu's own
policy, and on how a fault reads in the log (the cause, never a key).
"""

from __future__ import annotations

import email.utils
import json
import time
from urllib.parse import urlsplit

import httpx
from openai import APIConnectionError, APIStatusError, AsyncOpenAI, DefaultAsyncHttpxClient, OpenAI

# A local server takes any key, but the openai client refuses to start without one.
NO_KEY = "not-needed"
# The openai client's own retries are off: each stage's policy is the only one.
CLIENT_MAX_RETRIES = 0
# TCP connect limit: a dead host is given up on quickly (refused is immediate anyway).
CONNECT_TIMEOUT_S = 2.0


class EndpointFault(Exception):
    """A fault Nabu itself detected (no first word, a stall, ...): its message says it all."""


def api_key(key: str | None) -> str:
    """The key to hand a client: the configured one, or a placeholder a local server accepts."""
    return key or NO_KEY


def _timeout(timeout_s: float) -> httpx.Timeout:
    return httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))


def async_client(key: str | None, base_url: str | None, timeout_s: float) -> AsyncOpenAI:
    """An async client for one endpoint: no retries of its own, a short connect limit."""
    return AsyncOpenAI(
        api_key=api_key(key),
        base_url=base_url,
        max_retries=CLIENT_MAX_RETRIES,
        timeout=_timeout(timeout_s),
        http_client=DefaultAsyncHttpxClient(),
    )


def sync_client(key: str | None, base_url: str | None, timeout_s: float) -> OpenAI:
    """The blocking twin of `async_client` (the benchmark's sequential design)."""
    return OpenAI(
        api_key=api_key(key),
        base_url=base_url,
        max_retries=CLIENT_MAX_RETRIES,
        timeout=_timeout(timeout_s),
    )


def endpoint_label(base_url: str) -> str:
    """host:port/path of an endpoint, without any credentials in the URL."""
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path.rstrip('/')}"


def retry_after_s(error: Exception) -> float | None:
    """Seconds a 429/503 asks to wait (retry-after-ms, retry-after seconds or HTTP date)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def is_retryable(error: Exception) -> bool:
    """429, 5xx and connection errors are worth another try on the same endpoint."""
    if isinstance(error, APIStatusError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(error, (APIConnectionError, httpx.TransportError, ConnectionError))


def describe(error: Exception, secrets: tuple[str, ...] = ()) -> str:
    """A short cause for the log: what happened, never a key."""
    if isinstance(error, APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        inner = body.get("error", body) if isinstance(body, dict) else {}
        message = inner.get("message") if isinstance(inner, dict) else None
        text = f"HTTP {error.status_code}" + (f" {message}" if message else "")
        wait = retry_after_s(error)
        if wait is not None:
            text += f" (Retry-After {wait:g}s)"
    elif isinstance(error, APIConnectionError):
        # The innermost cause says it best: ConnectionRefusedError, RemoteProtocolError, ...
        cause, seen = error, 0
        while (nxt := cause.__cause__ or cause.__context__) is not None and seen < 8:
            cause, seen = nxt, seen + 1
        detail = f"{type(cause).__name__}: {cause}" if cause is not error else str(error)
        text = f"connection failed ({detail})"
    elif isinstance(error, json.JSONDecodeError):
        text = f"malformed stream data ({error.msg})"
    elif isinstance(error, EndpointFault):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split())[:200]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
