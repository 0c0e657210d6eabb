"""The emulator's ASGI app, its composition root: the routes of ``routes/`` (rest, logs, exec,
control), the bearer-token gate, the rate limit and JSON errors.

Every HTTP answer is JSON: ``{"data": ...}`` with 200 on success, ``{"error": {...}}``
otherwise, unknown routes included. ``/v1`` and ``/_emulator`` need ``Authorization: Bearer
<token>``; WebSockets carry the token in their first frame instead. Every ``/v1`` answer has
``x-ratelimit-limit/remaining/reset`` headers; past the hourly quota the answer is 429.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from pytest_northflank.emulator.context import (
    EmulatorContext,
    api_error_response,
    error_response,
)
from pytest_northflank.emulator.routes import (
    catalogue,
    control,
    forwarding,
    job_logs,
    jobs,
    logs,
    rest,
    secrets,
    service_updates,
)
from pytest_northflank.emulator.routes import exec as exec_routes
from pytest_northflank.errors import ApiError

HTTP_REASONS = {404: "Not found", 405: "Method not allowed"}


class ApiGate:
    """Checks the bearer token and counts the request against the rate limit."""

    def __init__(self, app: ASGIApp, ctx: EmulatorContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        is_api = path == "/v1" or path.startswith("/v1/")
        is_control = path == control.PREFIX or path.startswith(f"{control.PREFIX}/")
        if not (is_api or is_control):
            await self.app(scope, receive, send)
            return
        limiter = self.ctx.state.rate_limit
        now = time.monotonic()
        refusal: Response | None = None
        headers: dict[str, str] = limiter.headers(now) if is_api else {}
        problem = self._auth_problem(scope)
        if problem is not None:
            refusal = error_response(401, problem, headers=headers)
        elif is_api:
            allowed, headers = limiter.take(now)
            injected = self.ctx.state.faults.requests
            if not allowed:
                refusal = error_response(
                    429,
                    f"Rate limit exceeded: {limiter.limit} requests per hour; the quota resets "
                    f"in {headers['x-ratelimit-reset']} seconds",
                    headers=headers,
                )
            elif injected is not None and injected.take():
                refusal = error_response(injected.status, injected.message, headers=headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        *((k.encode(), v.encode()) for k, v in headers.items()),
                    ],
                }
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _auth_problem(self, scope: Scope) -> str | None:
        value = None
        for name, raw in scope.get("headers", []):
            if name == b"authorization":
                value = raw.decode("latin-1")
        if value is None:
            return "Missing API token: send the header 'Authorization: Bearer <token>'"
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "Malformed Authorization header: expected 'Bearer <token>'"
        if not self.ctx.token_matches(token.strip()):
            return "Invalid API token"
        return None


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = HTTP_REASONS.get(exc.status_code, exc.detail)
    if exc.status_code == 404:
        message = f"Not found: no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"Method not allowed: {request.method} {request.url.path}"
    return JSONResponse(
        {"error": {"status": exc.status_code, "message": message}},
        exc.status_code,
        headers=exc.headers,
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, f"Internal emulator error: {type(exc).__name__}: {exc}")


async def _websocket_not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Unknown WebSocket paths are refused with a JSON 404 (not a bare 403)."""
    websocket = WebSocket(scope, receive, send)
    body = {"error": {"status": 404, "message": f"Not found: no WebSocket route {scope['path']}"}}
    await websocket.send_denial_response(JSONResponse(body, 404))


def create_app(ctx: EmulatorContext) -> ASGIApp:
    """The emulator as an ASGI app serving ``ctx``."""
    handlers: dict[Any, Any] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    app = Starlette(
        routes=[
            *catalogue.ROUTES,
            *rest.ROUTES,
            *service_updates.ROUTES,
            *secrets.ROUTES,
            *jobs.ROUTES,
            *job_logs.ROUTES,
            *logs.ROUTES,
            *exec_routes.ROUTES,
            *control.ROUTES,
            *forwarding.ROUTES,
        ],
        exception_handlers=handlers,
    )
    app.router.redirect_slashes = False
    app.router.default = _not_found
    app.state.emulator = ctx
    return ApiGate(app, ctx)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await _websocket_not_found(scope, receive, send)
        return
    if scope["type"] == "http":
        request = Request(scope, receive)
        message = f"Not found: no route {request.method} {scope['path']}"
        await error_response(404, message)(scope, receive, send)
