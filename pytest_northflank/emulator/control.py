"""The control plane: reset, state dump, info and fault injection.

Over HTTP under ``/_emulator/`` (same bearer token as the API, outside the rate limit), and
from Python through :class:`EmulatorControl`, which calls those same routes, so it drives an
emulator in this process and one started by ``python -m pytest_northflank.emulator`` alike.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pytest_northflank.emulator.context import context_of, ok, read_json
from pytest_northflank.emulator.state import (
    BYOC_PROJECT_CREATE_MESSAGE,
    RATE_LIMIT_WINDOW_SECONDS,
    ExecDrop,
    Faults,
    RateLimiter,
    RequestFault,
)
from pytest_northflank.errors import ApiValidationError, EmulatorError

PREFIX = "/_emulator"
DEFAULT_CREATE_FAULT = (500, "Internal server error (injected by the emulator's control plane)")
DEFAULT_DELETE_FAULT = (503, "Service unavailable (injected by the emulator's control plane)")
DEFAULT_REQUEST_FAULT = (503, "Service unavailable (injected by the emulator's control plane)")


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is default:
        return value
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise ApiValidationError(f"{name} must be {wanted}, got {value!r}", status=400)
    return value


def _count(body: dict[str, Any]) -> int:
    count = _field(body, "count", (int,), 1)
    if count < 0:
        raise ApiValidationError(f"count must be >= 0, got {count}", status=400)
    return int(count)


def _status(body: dict[str, Any], default: int) -> int:
    status = _field(body, "status", (int,), default)
    if not 400 <= status <= 599:
        raise ApiValidationError(f"status must be an HTTP error status (400-599), got {status}",
                                 status=400)  # fmt: skip
    return int(status)


async def _body(request: Request) -> dict[str, Any]:
    body = await read_json(request, required=False)
    if not isinstance(body, dict):
        raise ApiValidationError("the body must be a JSON object", status=400)
    return body


async def info(request: Request) -> Response:
    ctx = context_of(request)
    return ok(
        {
            "version": ctx.version,
            "isolation": ctx.runtime.isolation,
            "isolationReason": ctx.runtime.isolation_reason,
            "projects": list(ctx.state.projects),
        }
    )


async def state_dump(request: Request) -> Response:
    ctx = context_of(request)
    dump = ctx.state.to_json()
    dump["isolation"] = ctx.runtime.isolation
    dump["isolationReason"] = ctx.runtime.isolation_reason
    dump["containers"] = [
        {"sandboxId": c.sandbox_id, "pid": c.pid, "running": c.is_running()}
        for c in ctx.runtime.containers()
    ]
    return ok(dump)


async def reset(request: Request) -> Response:
    ctx = context_of(request)
    dropped = ctx.state.reset()
    await ctx.deployments.drop(dropped)
    return ok({"deletedServices": len(dropped)})


def _request_fault(body: dict[str, Any], default: tuple[int, str]) -> RequestFault:
    """The ``count``/``status``/``message`` fault every request-fault endpoint accepts."""
    return RequestFault(
        remaining=_count(body),
        status=_status(body, default[0]),
        message=_field(body, "message", (str,), default[1]),
    )


async def fault_create(request: Request) -> Response:
    body = await _body(request)
    faults = context_of(request).state.faults
    fault = _request_fault(body, DEFAULT_CREATE_FAULT)
    # checked last, as before: a body with several bad fields still names count/status/message first
    fault.after_create = _field(body, "afterCreate", (bool,), False)
    faults.create = fault
    return ok(faults.to_json())


async def fault_delete(request: Request) -> Response:
    body = await _body(request)
    faults = context_of(request).state.faults
    faults.delete = _request_fault(body, DEFAULT_DELETE_FAULT)
    return ok(faults.to_json())


async def fault_readiness(request: Request) -> Response:
    body = await _body(request)
    faults = context_of(request).state.faults
    delay = _field(body, "delay", (int, float), None)
    if delay is not None:
        if delay < 0:
            raise ApiValidationError(f"delay must be >= 0, got {delay}", status=400)
        faults.ready_delay = float(delay)
    fail = _field(body, "fail", (bool,), None)
    if fail is not None:
        faults.fail_readiness = fail
    return ok(faults.to_json())


async def fault_requests(request: Request) -> Response:
    body = await _body(request)
    faults = context_of(request).state.faults
    faults.requests = _request_fault(body, DEFAULT_REQUEST_FAULT)
    return ok(faults.to_json())


async def fault_exec_drop(request: Request) -> Response:
    body = await _body(request)
    faults = context_of(request).state.faults
    after = _field(body, "afterFrames", (int,), 0)
    if after < 0:
        raise ApiValidationError(f"afterFrames must be >= 0, got {after}", status=400)
    faults.exec_drop = ExecDrop(remaining=_count(body), after_frames=int(after))
    return ok(faults.to_json())


async def fault_exit_code_as_string(request: Request) -> Response:
    body = await _body(request)
    faults = context_of(request).state.faults
    faults.exit_code_as_string = _field(body, "enabled", (bool,), True)
    return ok(faults.to_json())


async def faults_clear(request: Request) -> Response:
    state = context_of(request).state
    state.faults = Faults(ready_delay=state.config.ready_delay)
    return ok(state.faults.to_json())


async def rate_limit(request: Request) -> Response:
    body = await _body(request)
    per_hour = _field(body, "perHour", (int,), None)
    if per_hour is not None and per_hour < 0:
        raise ApiValidationError(f"perHour must be >= 0 or null, got {per_hour}", status=400)
    window = _field(body, "windowSeconds", (int, float), RATE_LIMIT_WINDOW_SECONDS)
    if not window > 0:
        raise ApiValidationError(f"windowSeconds must be > 0, got {window}", status=400)
    state = context_of(request).state
    state.rate_limit = RateLimiter(per_hour, float(window))
    return ok({"perHour": per_hour, "windowSeconds": float(window)})


async def cluster(request: Request) -> Response:
    body = await _body(request)
    state = context_of(request).state
    spot_only = _field(body, "spotOnly", (bool,), None)
    if spot_only is not None:
        state.spot_only = spot_only
    if "projectCreateError" in body:
        error = body["projectCreateError"]
        if error is True:
            error = BYOC_PROJECT_CREATE_MESSAGE
        if error is not None and error is not False and not isinstance(error, str):
            raise ApiValidationError(
                "projectCreateError must be a string, true or null", status=400
            )
        state.project_create_error = error or None
    return ok({"spotOnly": state.spot_only, "projectCreateError": state.project_create_error})


async def delete_out_of_band(request: Request) -> Response:
    """Delete a service as if someone did it in the dashboard: no fault, no rate limit."""
    ctx = context_of(request)
    service = ctx.state.service(request.path_params["projectId"], request.path_params["serviceId"])
    ctx.state.remove_service(service)
    await ctx.deployments.stop_instance(service)
    return ok({})


ROUTES: list[BaseRoute] = [
    Route(f"{PREFIX}/info", info, methods=["GET"]),
    Route(f"{PREFIX}/state", state_dump, methods=["GET"]),
    Route(f"{PREFIX}/reset", reset, methods=["POST"]),
    Route(f"{PREFIX}/faults/create", fault_create, methods=["POST"]),
    Route(f"{PREFIX}/faults/delete", fault_delete, methods=["POST"]),
    Route(f"{PREFIX}/faults/readiness", fault_readiness, methods=["POST"]),
    Route(f"{PREFIX}/faults/requests", fault_requests, methods=["POST"]),
    Route(f"{PREFIX}/faults/exec-drop", fault_exec_drop, methods=["POST"]),
    Route(f"{PREFIX}/faults/exit-code-as-string", fault_exit_code_as_string, methods=["POST"]),
    Route(f"{PREFIX}/faults/clear", faults_clear, methods=["POST"]),
    Route(f"{PREFIX}/rate-limit", rate_limit, methods=["POST"]),
    Route(f"{PREFIX}/cluster", cluster, methods=["POST"]),
    Route(
        f"{PREFIX}/projects/{{projectId}}/services/{{serviceId}}",
        delete_out_of_band,
        methods=["DELETE"],
    ),
]


class EmulatorControl:
    """Drives an emulator's control plane from Python (over its ``/_emulator/`` routes).

    Faults are consumed by the API calls they affect; :meth:`reset` clears them along with
    every service and tag. Errors raise :class:`~pytest_northflank.errors.EmulatorError`.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"EmulatorControl({self.url!r})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            with httpx.Client(timeout=self._timeout, headers=headers) as client:
                response = client.request(method, f"{self.url}{PREFIX}{path}", json=body)
        except httpx.HTTPError as exc:
            raise EmulatorError(f"emulator control {method} {path} failed: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200 or not isinstance(payload, dict):
            message = response.text[:300]
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                message = str(payload["error"].get("message"))
            raise EmulatorError(
                f"emulator control {method} {path} failed: {response.status_code} {message}"
            )
        return payload.get("data")

    def reset(self) -> None:
        """Delete every service (stopping its container) and tag; clear faults and the rate
        limit; restore the projects and cluster settings the emulator started with."""
        self._call("POST", "/reset")

    def state(self) -> dict[str, Any]:
        """A dump of projects, tags, services (with their containers), faults, rate limit."""
        result: dict[str, Any] = self._call("GET", "/state")
        return result

    def info(self) -> dict[str, Any]:
        """``version``, ``isolation``, ``isolationReason`` and the project ids."""
        result: dict[str, Any] = self._call("GET", "/info")
        return result

    def fail_next_creates(
        self,
        count: int = 1,
        status: int = DEFAULT_CREATE_FAULT[0],
        message: str = DEFAULT_CREATE_FAULT[1],
        *,
        after_create: bool = False,
    ) -> None:
        """The next ``count`` service creates answer ``status``/``message``. With
        ``after_create`` the service is created anyway (an ambiguous failure)."""
        body = {"count": count, "status": status, "message": message, "afterCreate": after_create}
        self._call("POST", "/faults/create", body)

    def fail_next_deletes(
        self,
        count: int = 1,
        status: int = DEFAULT_DELETE_FAULT[0],
        message: str = DEFAULT_DELETE_FAULT[1],
    ) -> None:
        """The next ``count`` service deletes answer ``status``/``message`` and delete nothing."""
        self._call("POST", "/faults/delete", {"count": count, "status": status, "message": message})

    def fail_next_requests(
        self,
        count: int = 1,
        status: int = DEFAULT_REQUEST_FAULT[0],
        message: str = DEFAULT_REQUEST_FAULT[1],
    ) -> None:
        """The next ``count`` API requests over HTTP, whatever they are, answer ``status`` and
        ``message`` and do nothing (a burst of 5xx, or of 429 with the quota not spent)."""
        body = {"count": count, "status": status, "message": message}
        self._call("POST", "/faults/requests", body)

    def set_ready(self, delay: float | None = None, fail: bool | None = None) -> None:
        """Readiness of deployments started from now on: ``delay`` seconds to COMPLETED;
        ``fail=True`` makes them end FAILED instead (after the delay)."""
        body: dict[str, Any] = {}
        if delay is not None:
            body["delay"] = delay
        if fail is not None:
            body["fail"] = fail
        self._call("POST", "/faults/readiness", body)

    def drop_next_exec(self, after_frames: int = 0, count: int = 1) -> None:
        """The next ``count`` exec connections are closed (1011, no completion frame) after
        ``after_frames`` output frames; their commands are killed."""
        self._call("POST", "/faults/exec-drop", {"afterFrames": after_frames, "count": count})

    def exit_code_as_string(self, on: bool = True) -> None:
        """Send ``exitCode`` as a JSON string ("3"), as the real proxy is said to."""
        self._call("POST", "/faults/exit-code-as-string", {"enabled": on})

    def clear_faults(self) -> None:
        """Drop every pending fault; readiness goes back to the configured delay."""
        self._call("POST", "/faults/clear")

    def set_rate_limit(
        self, per_hour: int | None, *, window_seconds: float = RATE_LIMIT_WINDOW_SECONDS
    ) -> None:
        """A new hourly quota (``None``: unlimited), starting a fresh window. A shorter
        ``window_seconds`` than the hour lets a test see the quota run out and come back."""
        self._call("POST", "/rate-limit", {"perHour": per_hour, "windowSeconds": window_seconds})

    def set_spot_only(self, on: bool = True) -> None:
        """Make the cluster spot-only: creates need a tag whose ``useSpotNodes`` is true."""
        self._call("POST", "/cluster", {"spotOnly": on})

    def set_project_creation_error(self, message: str | None = BYOC_PROJECT_CREATE_MESSAGE) -> None:
        """``POST /v1/projects`` fails with ``message`` (as on a BYOC cluster); ``None``
        lets it work again."""
        self._call("POST", "/cluster", {"projectCreateError": message})

    def delete_service(self, project_id: str, service_id: str) -> None:
        """Delete a service behind the client's back (as from the dashboard)."""
        self._call(
            "DELETE",
            f"/projects/{quote(project_id, safe='')}/services/{quote(service_id, safe='')}",
        )
