"""REST transport: one pooled ``httpx.Client``, the ``data`` envelope, the error mapping onto
``pytest_northflank.errors`` (the only place HTTP statuses become exceptions), retries with
backoff, rate-limit figures and pagination.

Retry policy. Idempotent requests (GET, DELETE, pause, resume, scale: repeating them leaves the
same state) retry transport errors, 5xx and 429 with exponential backoff and full jitter.
Requests that must not happen twice (restart, tag create) retry only what the server cannot
have acted on (the connection was never made, 429) and raise anything else at once. A 429 with
``x-ratelimit-remaining: 0`` waits for ``x-ratelimit-reset`` instead, unless that is longer
than ``max_rate_limit_wait``: then ``RateLimitedError`` is raised at once with ``reset_after``.
Creates use :meth:`RestTransport.post_create`, which resends the same way and reports every
other failure as :class:`AmbiguousFailure`, so the caller can look the resource up instead.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from pytest_northflank._version import __version__
from pytest_northflank.checks import describe_url, token_problem, url_problem
from pytest_northflank.client.models import RateLimitStatus
from pytest_northflank.errors import (
    ApiError,
    ApiValidationError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    ConnectFailed,
    NorthflankError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TransportError,
)

__all__ = [
    "PERMISSION_HINT",
    "AmbiguousFailure",
    "RestTransport",
    "api_error",
    "quote",
]

logger = logging.getLogger("pytest_northflank.client")

PERMISSION_HINT = (
    "the API token's role needs the Projects, Services and Tags permissions "
    "(read, create, update, delete) for the project in use"
)

# Failures where the request provably never reached the server: safe to resend even a create.
_UNSENT_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)
_MAX_TEXT = 500
_SCRUBBED = "***"


def quote(segment: str) -> str:
    """URL-encode one path segment (``/`` included), as the official Python SDK does."""
    if not segment:
        raise ValueError("an id in the request path must not be empty")
    return urllib.parse.quote(segment, safe="")


@dataclass(frozen=True)
class AmbiguousFailure:
    """A create whose outcome is unknown: the request may have reached the server (timeout
    after sending, broken connection, 5xx). ``error`` says what happened."""

    error: NorthflankError


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _format_details(details: Any) -> str:
    """A one-line summary of ``error.details`` (a list of ``{path, message}`` or anything)."""
    if details is None or details == {} or details == []:
        return ""
    if isinstance(details, list) and all(isinstance(item, dict) for item in details):
        parts = []
        for item in details:
            where = item.get("path")
            if isinstance(where, list):
                where = ".".join(str(p) for p in where)
            message = item.get("message") or json.dumps(item, sort_keys=True)
            parts.append(f"{where}: {message}" if where else str(message))
        text = "; ".join(parts)
    else:
        text = json.dumps(details, sort_keys=True, default=str)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


def _find_permission(details: Any) -> str | None:
    """The permission a 403 names, if the body says (``details.permission`` and kin)."""
    if isinstance(details, dict):
        for key in ("missingPermission", "requiredPermission", "permission", "permissions"):
            value = details.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:
                return ", ".join(str(v) for v in value)
        for value in details.values():
            found = _find_permission(value)
            if found:
                return found
    if isinstance(details, list):
        for value in details:
            found = _find_permission(value)
            if found:
                return found
    return None


def api_error(
    status: int,
    body: bytes | str,
    *,
    method: str,
    path: str,
    reset_after: float | None = None,
    scrub: Callable[[str], str] = lambda text: text,
    reason: str = "",
) -> ApiError:
    """Map an HTTP error status and body onto the error tree. The one seam for API errors:
    REST responses and rejected WebSocket upgrades both come through here."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    message = ""
    error_id: str | None = None
    details: Any = None
    try:
        parsed = json.loads(text) if text.strip() else None
    except (json.JSONDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        error_id = str(error["id"]) if error.get("id") is not None else None
        details = error.get("details")
    elif isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        message = parsed["message"]
    if not message:
        message = text.strip()[:_MAX_TEXT] if text.strip() else (reason or "no error message")
    message = scrub(message)
    kwargs: dict[str, Any] = {
        "status": status,
        "method": method,
        "path": path,
        "error_id": error_id,
        "details": details,
    }
    summary = scrub(_format_details(details))
    if status in (400, 422):
        # Some servers (the emulator among them) already spell the details out in the message.
        full = f"{message}: {summary}" if summary and summary not in message else message
        return ApiValidationError(full, **kwargs)
    if status == 401:
        return AuthenticationError(
            f"{message} (the API token is missing, wrong or expired)", **kwargs
        )
    if status == 403:
        permission = _find_permission(details)
        if permission is None and summary:
            missing = f" ({summary})"
        else:
            missing = f"; missing permission: {scrub(permission)}" if permission else ""
        return PermissionDeniedError(f"{message}{missing}. Hint: {PERMISSION_HINT}", **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    if status == 409:
        return ConflictError(message, **kwargs)
    if status == 429:
        when = f"; the quota resets in {reset_after:g}s" if reset_after is not None else ""
        return RateLimitedError(f"{message}{when}", reset_after=reset_after, **kwargs)
    if status >= 500:
        return ServerError(message, **kwargs)
    return ApiError(message, **kwargs)


class RestTransport:
    """Bearer-authenticated JSON over one pooled ``httpx.Client``.

    Thread-safe: the httpx pool is, and the counters are guarded by a lock.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
        max_rate_limit_wait: float = 120.0,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ConfigError("a Northflank API token is required (it is empty)")
        bad_token = token_problem(token)
        if bad_token is not None:
            raise ConfigError(f"the Northflank API token {bad_token}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        bad_url = url_problem(base_url) if isinstance(base_url, str) else "is not a string"
        if bad_url is not None:
            raise ConfigError(f"the API base URL {describe_url(str(base_url))} {bad_url}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_rate_limit_wait = max_rate_limit_wait
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self.__token = token
        self.user_agent = f"pytest-northflank/{__version__}" + (
            f" ({user_agent})" if user_agent else ""
        )
        self.rate_limit: RateLimitStatus | None = None
        self.request_count = 0
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": self.user_agent,
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"RestTransport(base_url={self.base_url!r})"

    @property
    def token(self) -> str:
        """The API token (for the WebSocket init frames). Never print it."""
        return self.__token

    def scrub(self, text: str) -> str:
        """``text`` with any occurrence of the token replaced: a server could echo it back."""
        return text.replace(self.__token, _SCRUBBED) if self.__token in text else text

    def close(self) -> None:
        self._http.close()

    # ----------------------------------------------------------------- one attempt

    def _record(self, response: httpx.Response) -> None:
        headers = response.headers
        limit = _number(headers.get("x-ratelimit-limit"))
        remaining = _number(headers.get("x-ratelimit-remaining"))
        reset = _number(headers.get("x-ratelimit-reset"))
        if limit is None and remaining is None and reset is None:
            return
        self.rate_limit = RateLimitStatus(
            limit=None if limit is None else int(limit),
            remaining=None if remaining is None else int(remaining),
            reset_after=reset,
            observed_at=datetime.now(timezone.utc),
        )

    def _attempt(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        timeout: float | None = None,
    ) -> httpx.Response | tuple[httpx.HTTPError, bool]:
        """Send once. Returns the response, or ``(error, maybe_sent)`` for a transport failure."""
        with self._lock:
            self.request_count += 1
        started = time.monotonic()
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                content=None if body is None else json.dumps(body).encode(),
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout),
            )
        except httpx.HTTPError as exc:
            maybe_sent = not isinstance(exc, _UNSENT_ERRORS)
            logger.debug("%s %s failed: %s", method, path, type(exc).__name__)
            return exc, maybe_sent
        self._record(response)
        logger.debug(
            "%s %s -> %d in %.0f ms",
            method,
            path,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _transport_error(self, method: str, path: str, exc: httpx.HTTPError) -> TransportError:
        detail = self.scrub(str(exc)) or type(exc).__name__
        kind = ConnectFailed if isinstance(exc, _UNSENT_ERRORS) else TransportError
        return kind(f"{method} {self.base_url}{path} failed: {type(exc).__name__}: {detail}")

    def _error(self, method: str, path: str, response: httpx.Response) -> ApiError:
        # Northflank documents x-ratelimit-reset; a standard Retry-After is honoured too.
        reset = _number(response.headers.get("x-ratelimit-reset"))
        if reset is None:
            reset = _number(response.headers.get("retry-after"))
        return api_error(
            response.status_code,
            response.content,
            method=method,
            path=path,
            reset_after=reset,
            scrub=self.scrub,
            reason=response.reason_phrase,
        )

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        """The parsed envelope; an empty or non-JSON success body reads as ``{}``."""
        if not response.content.strip():
            return {}
        try:
            parsed = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {"data": parsed}

    # ----------------------------------------------------------------- backoff

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads parallel workers that failed together.
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def _rate_limit_wait(self, error: RateLimitedError, attempt: int) -> float:
        """How long to wait before retrying a 429; raises ``error`` when too long."""
        remaining = self.rate_limit.remaining if self.rate_limit else None
        reset = error.reset_after
        if reset is not None and (remaining is None or remaining <= 0):
            if reset > self.max_rate_limit_wait:
                raise error
            return reset + random.uniform(0, min(1.0, self.backoff_base))
        return self._backoff(attempt)

    # ----------------------------------------------------------------- public

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool = True,
        within: float | None = None,
    ) -> dict[str, Any]:
        """Send a request and return the whole JSON envelope (``{"data": ..., ...}``).

        ``idempotent=False``: resend only when the server cannot have acted (no connection,
        429), so the request never takes effect twice. ``within``: seconds for all attempts
        together (each attempt's timeout shrinks to what is left; no retry after it).
        """
        attempts = self.max_retries + 1
        give_up_at = None if within is None else time.monotonic() + within
        for attempt in range(attempts):
            left = None if give_up_at is None else max(give_up_at - time.monotonic(), 0.1)
            last = attempt == attempts - 1 or (left is not None and left <= 0.1)
            outcome = self._attempt(
                method, path, params, body, None if left is None else min(left, self.timeout)
            )
            if isinstance(outcome, tuple):
                exc, maybe_sent = outcome
                if last or (maybe_sent and not idempotent):
                    raise self._transport_error(method, path, exc) from None
                delay = self._backoff(attempt)
            elif outcome.is_success:
                return self._body(outcome)
            else:
                error = self._error(method, path, outcome)
                retryable = isinstance(error, RateLimitedError) or (
                    idempotent and isinstance(error, ServerError)
                )
                if last or not retryable:
                    raise error
                delay = (
                    self._rate_limit_wait(error, attempt)
                    if isinstance(error, RateLimitedError)
                    else self._backoff(attempt)
                )
            if give_up_at is not None and time.monotonic() + delay >= give_up_at:
                if isinstance(outcome, tuple):
                    raise self._transport_error(method, path, outcome[0]) from None
                raise error
            logger.debug("retrying %s %s in %.2fs (attempt %d)", method, path, delay, attempt + 2)
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def post_create(self, path: str, body: Any) -> dict[str, Any] | AmbiguousFailure:
        """POST a create. Resends only when the server cannot have acted (no connection, 429);
        any other failure after sending comes back as :class:`AmbiguousFailure`."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            outcome = self._attempt("POST", path, None, body)
            if isinstance(outcome, tuple):
                exc, maybe_sent = outcome
                error = self._transport_error("POST", path, exc)
                if maybe_sent:
                    return AmbiguousFailure(error)
                if last:
                    raise error from None
                delay = self._backoff(attempt)
            elif outcome.is_success:
                return self._body(outcome)
            else:
                api = self._error("POST", path, outcome)
                if isinstance(api, ServerError):
                    return AmbiguousFailure(api)
                if last or not isinstance(api, RateLimitedError):
                    raise api
                delay = self._rate_limit_wait(api, attempt)
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def paginate(
        self, path: str, key: str, *, params: Mapping[str, Any] | None = None, per_page: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of ``data[key]`` across pages.

        Continues only while the page says ``hasNextPage`` (absent counts as yes) *and* carries
        a non-empty ``cursor``: a null or missing cursor ends the listing, and a cursor seen
        twice is an error rather than an endless loop.
        """
        query: dict[str, Any] = {**(params or {}), "per_page": per_page}
        seen: set[str] = set()
        while True:
            envelope = self.request("GET", path, params=query)
            data = envelope.get("data")
            items = data.get(key) if isinstance(data, dict) else data
            if items is None:
                items = []
            if not isinstance(items, list):
                raise ApiError(
                    f"expected a list under data.{key}, got {type(items).__name__}",
                    status=200,
                    method="GET",
                    path=path,
                )
            for item in items:
                if isinstance(item, dict):
                    yield item
            pagination = envelope.get("pagination")
            if not isinstance(pagination, dict) or pagination.get("hasNextPage") is False:
                return
            cursor = pagination.get("cursor")
            if not isinstance(cursor, str) or not cursor:
                return
            if cursor in seen:
                raise ApiError(
                    f"pagination returned cursor {cursor!r} twice; stopping to avoid a loop",
                    status=200,
                    method="GET",
                    path=path,
                )
            seen.add(cursor)
            query = {**(params or {}), "per_page": per_page, "cursor": cursor}
