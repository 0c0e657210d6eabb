"""What every route needs: the state, the lifecycle, the runtime and the token, plus the
helpers that turn results and errors into the API's JSON envelope."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from pytest_northflank.emulator.deployments import Deployments
from pytest_northflank.emulator.job_runs import JobRuns
from pytest_northflank.emulator.runtime import ContainerRuntime
from pytest_northflank.emulator.state import EmulatorState
from pytest_northflank.errors import ApiError, ApiValidationError


@dataclass
class EmulatorContext:
    state: EmulatorState
    deployments: Deployments
    runtime: ContainerRuntime
    token: str
    version: str
    #: ``127.0.0.1:PORT`` of the TLS listener serving the forwarding tunnel (None: off)
    tunnel_domain: str | None = None
    jobs: JobRuns = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = JobRuns(self.state, self.runtime)

    def token_matches(self, candidate: object) -> bool:
        return isinstance(candidate, str) and secrets.compare_digest(
            candidate.encode("utf-8", "replace"), self.token.encode("utf-8")
        )


def context_of(connection: HTTPConnection) -> EmulatorContext:
    ctx = connection.app.state.emulator
    assert isinstance(ctx, EmulatorContext)
    return ctx


def ok(data: Any, pagination: dict[str, Any] | None = None) -> JSONResponse:
    """200 with the ``{"data": ...}`` envelope (both official clients need exactly 200)."""
    body: dict[str, Any] = {"data": data}
    if pagination is not None:
        body["pagination"] = pagination
    return JSONResponse(body)


def error_body(status: int, message: str, error_id: str | None = None,
               details: Any = None) -> dict[str, Any]:  # fmt: skip
    error: dict[str, Any] = {"status": status, "message": message}
    if error_id is not None:
        error["id"] = error_id
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int, message: str, *, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, details=details), status, headers=headers)


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status, exc.api_message, exc.error_id, exc.details), exc.status
    )


async def read_json(request: Request, *, required: bool) -> Any:
    """The JSON body; ``{}`` for an empty optional body (clients send none, or ``{}``)."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiValidationError("Request body is required: a JSON object", status=400)
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiValidationError(f"Request body is not valid JSON: {exc}", status=400) from None
