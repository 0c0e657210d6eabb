"""The control plane's routes: reset, state dump, info and fault injection, over HTTP under
``/_emulator/`` (same bearer token as the API, outside the rate limit). From Python,
:class:`~pytest_northflank.emulator.control_client.EmulatorControl` calls them.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pytest_northflank.emulator.context import context_of, ok, read_json
from pytest_northflank.emulator.faults import (
    RATE_LIMIT_WINDOW_SECONDS,
    ExecDrop,
    Faults,
    RateLimiter,
    RequestFault,
)
from pytest_northflank.emulator.state import BYOC_PROJECT_CREATE_MESSAGE
from pytest_northflank.errors import ApiValidationError

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
            "imageFallbacks": [
                {"image": f.image, "reason": f.reason, "notice": f.notice}
                for f in ctx.deployments.images.fallbacks()
            ],
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
    # Names and states only: secret-group values and environments stay out of the dump.
    dump["secretGroups"] = [
        {"projectId": g.project_id, "id": g.id, "priority": g.priority, "keys": sorted(g.variables)}
        for g in ctx.state.secret_groups.groups.values()
    ]
    dump["jobs"] = [
        {
            "projectId": job.project_id,
            "id": job.id,
            "runs": [{"id": r.id, "status": r.status} for r in ctx.jobs.runs_of(job)],
        }
        for job in ctx.jobs.jobs.values()
    ]
    return ok(dump)


async def reset(request: Request) -> Response:
    ctx = context_of(request)
    dropped = ctx.state.reset()
    await ctx.jobs.reset()
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
        if not math.isfinite(delay) or delay < 0:
            raise ApiValidationError(f"delay must be a finite number >= 0, got {delay}", status=400)
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
    if not math.isfinite(window) or not window > 0:
        raise ApiValidationError(
            f"windowSeconds must be a finite number > 0, got {window}", status=400
        )
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
