"""Secret-group routes: ``/v1/projects/{p}/secrets`` (contract section 13).

Changing a group restarts the running services it reaches (before or after the change), so
their containers see the new values, as Northflank redeploys the workloads of a group.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from pytest_northflank.emulator.context import EmulatorContext, context_of, ok, read_json
from pytest_northflank.emulator.pagination import paginate
from pytest_northflank.emulator.routes.rest import api_routes
from pytest_northflank.emulator.secrets import SecretGroup, check_group_body, group_summary
from pytest_northflank.emulator.state import ServiceRecord, iso, utcnow

GROUPS = "/projects/{projectId}/secrets"
GROUP = "/projects/{projectId}/secrets/{secretId}"


def group_detail(group: SecretGroup) -> dict[str, Any]:
    """``GET .../secrets/{id}``: the group with its (decrypted) values."""
    return {
        **group_summary(group),
        **group.extra,
        "secrets": {"variables": dict(group.variables), "files": dict(group.files)},
        "createdAt": iso(group.created_at),
        "updatedAt": iso(group.updated_at),
    }


def _reached(ctx: EmulatorContext, group: SecretGroup) -> list[ServiceRecord]:
    return [
        service
        for service in ctx.state.project_services(group.project_id)
        if group.applies_to("service", service.id, service.spec.tags)
    ]


async def _restart(ctx: EmulatorContext, services: list[ServiceRecord]) -> None:
    for service in services:
        if not service.deleted and not service.paused and service.instance is not None:
            await ctx.deployments.roll_out(service, "DEPLOYING")


async def list_groups(request: Request) -> Response:
    state = context_of(request).state
    project_id = request.path_params["projectId"]
    state.project(project_id)
    groups = state.secret_groups.of_project(project_id)
    page, pagination = paginate(groups, request.query_params)
    return ok({"secrets": [group_summary(g) for g in page]}, pagination)


async def _create(request: Request, *, upsert: bool) -> Response:
    ctx = context_of(request)
    project_id = request.path_params["projectId"]
    ctx.state.project(project_id)
    body = check_group_body(await read_json(request, required=True), "create")
    group = ctx.state.secret_groups.create(project_id, body, utcnow(), upsert=upsert)
    await _restart(ctx, _reached(ctx, group))
    return ok(group_detail(group))


async def create_group(request: Request) -> Response:
    return await _create(request, upsert=False)


async def put_group(request: Request) -> Response:
    return await _create(request, upsert=True)


def _group(request: Request) -> SecretGroup:
    state = context_of(request).state
    project_id = request.path_params["projectId"]
    state.project(project_id)
    return state.secret_groups.get(project_id, request.path_params["secretId"])


async def get_group(request: Request) -> Response:
    return ok(group_detail(_group(request)))


async def get_group_details(request: Request) -> Response:
    return ok({**group_detail(_group(request)), "addonSecrets": []})


async def _change(request: Request, mode: str) -> SecretGroup:
    ctx = context_of(request)
    group = _group(request)
    body = check_group_body(
        await read_json(request, required=True), "patch" if mode == "patch" else "update"
    )
    before = _reached(ctx, group)
    ctx.state.secret_groups.change(group, body, utcnow())
    after = _reached(ctx, group)
    await _restart(ctx, [*before, *(s for s in after if s not in before)])
    return group


async def patch_group(request: Request) -> Response:
    return ok(group_detail(await _change(request, "patch")))


async def update_group(request: Request) -> Response:
    await _change(request, "update")
    return ok({})


async def delete_group(request: Request) -> Response:
    ctx = context_of(request)
    group = _group(request)
    reached = _reached(ctx, group)
    ctx.state.secret_groups.delete(group)
    await _restart(ctx, reached)
    return ok({})


ROUTES: list[BaseRoute] = [
    *api_routes(GROUPS, list_groups, ["GET"]),
    *api_routes(GROUPS, create_group, ["POST"]),
    *api_routes(GROUPS, put_group, ["PUT"]),
    *api_routes(GROUP, get_group, ["GET"]),
    *api_routes(f"{GROUP}/details", get_group_details, ["GET"]),
    *api_routes(GROUP, patch_group, ["PATCH"]),
    *api_routes(GROUP, update_group, ["POST"]),
    *api_routes(GROUP, delete_group, ["DELETE"]),
]
