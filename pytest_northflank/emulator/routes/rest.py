"""REST routes under ``/v1`` (and ``/v1/teams/{teamId}``): projects, tags, deployment services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pytest_northflank.emulator.context import context_of, ok, read_json
from pytest_northflank.emulator.deployments import current
from pytest_northflank.emulator.pagination import paginate
from pytest_northflank.emulator.state import (
    REGION,
    ProjectRecord,
    TagRecord,
    utcnow,
)
from pytest_northflank.emulator.validation import (
    TagSpec,
    check_instances_body,
    check_project_body,
    check_service_body,
    check_tag_body,
)
from pytest_northflank.emulator.views import (
    container_entries,
    project_detail,
    project_summary,
    service_detail,
    service_summary,
    tag_view,
)
from pytest_northflank.errors import ApiError, ApiValidationError, ConflictError

Endpoint = Callable[[Request], Awaitable[Response]]
SERVICE = "/projects/{projectId}/services/{serviceId}"


def api_routes(path: str, endpoint: Endpoint, methods: list[str]) -> list[BaseRoute]:
    """``/v1<path>`` and its team-scoped twin ``/v1/teams/{teamId}<path>``."""
    return [
        Route(f"/v1{path}", endpoint, methods=methods),
        Route(f"/v1/teams/{{teamId}}{path}", endpoint, methods=methods),
    ]


# -- projects ---------------------------------------------------------------------------------


async def list_projects(request: Request) -> Response:
    state = context_of(request).state
    page, pagination = paginate(list(state.projects.values()), request.query_params)
    return ok({"projects": [project_summary(p) for p in page]}, pagination)


async def get_project(request: Request) -> Response:
    state = context_of(request).state
    project = state.project(request.path_params["projectId"])
    jobs = [
        {"id": job.id, "appId": f"/emulator/{job.project_id}/{job.id}", "name": job.spec.name,
         "jobType": job.spec.job_type}
        for job in context_of(request).jobs.of_project(project.id)
    ]  # fmt: skip
    return ok(project_detail(state, project, jobs))


async def create_project(request: Request) -> Response:
    state = context_of(request).state
    spec = check_project_body(await read_json(request, required=True))
    record = ProjectRecord(spec.id, spec.name, spec.description, spec.region or REGION, utcnow())
    state.add_project(record)
    return ok(project_detail(state, record))


# -- tags -------------------------------------------------------------------------------------


async def list_tags(request: Request) -> Response:
    state = context_of(request).state
    page, pagination = paginate(list(state.tags.values()), request.query_params)
    return ok({"tags": [tag_view(t) for t in page]}, pagination)


async def get_tag(request: Request) -> Response:
    return ok(tag_view(context_of(request).state.tag(request.path_params["resourceTagId"])))


async def create_tag(request: Request) -> Response:
    state = context_of(request).state
    spec = check_tag_body(await read_json(request, required=True))
    assert isinstance(spec, TagSpec)
    return ok(tag_view(state.add_tag(spec)))


async def put_tag(request: Request) -> Response:
    """Create or update, by name (there is no id in the path)."""
    state = context_of(request).state
    spec = check_tag_body(await read_json(request, required=True))
    assert isinstance(spec, TagSpec)
    now = utcnow()
    tag = state.tags.get(spec.id)
    if tag is None:
        tag = state.tags[spec.id] = TagRecord(spec.id, spec.name, spec.fields, now, now)
    else:
        tag.fields, tag.updated_at = spec.fields, now
    return ok(tag_view(tag))


async def patch_tag(request: Request) -> Response:
    state = context_of(request).state
    tag = state.tag(request.path_params["resourceTagId"])
    changes = check_tag_body(await read_json(request, required=True), partial=True)
    assert isinstance(changes, dict)
    if "name" in changes and changes["name"] != tag.name:
        raise ApiValidationError("A tag's name cannot be changed", status=400)
    tag.fields.update(changes)
    tag.updated_at = utcnow()
    return ok(tag_view(tag))


async def delete_tag(request: Request) -> Response:
    state = context_of(request).state
    tag = state.tag(request.path_params["resourceTagId"])
    del state.tags[tag.id]
    return ok({})


# -- services ---------------------------------------------------------------------------------


def _service_of(request: Request) -> tuple[str, str]:
    return request.path_params["projectId"], request.path_params["serviceId"]


async def list_services(request: Request) -> Response:
    state = context_of(request).state
    project_id = request.path_params["projectId"]
    state.project(project_id)
    services = state.project_services(project_id)
    for service in services:
        state.refresh(service)
    page, pagination = paginate(services, request.query_params)
    return ok({"services": [service_summary(s) for s in page]}, pagination)


async def create_service(request: Request) -> Response:
    ctx = context_of(request)
    state = ctx.state
    project_id = request.path_params["projectId"]
    fault = state.faults.create
    if fault is not None and not fault.after_create and fault.take():
        raise ApiError(fault.message, status=fault.status)
    state.project(project_id)
    spec = check_service_body(await read_json(request, required=True))
    service = state.add_service(project_id, spec)
    await ctx.deployments.roll_out(service, "DEPLOYING")
    fault = state.faults.create
    if fault is not None and fault.after_create and fault.take():
        raise ApiError(fault.message, status=fault.status)  # the service exists anyway
    return ok(service_detail(service))


async def get_service(request: Request) -> Response:
    service = await current(context_of(request).state, *_service_of(request))
    return ok(service_detail(service))


async def delete_service(request: Request) -> Response:
    ctx = context_of(request)
    state = ctx.state
    fault = state.faults.delete
    if fault is not None and fault.take():
        raise ApiError(fault.message, status=fault.status)
    flag = request.query_params.get("delete_child_objects")
    if flag not in (None, "true", "false"):
        raise ApiValidationError(
            f"delete_child_objects must be true or false, got {flag[:20]!r}", status=400
        )
    service = state.service(*_service_of(request))
    state.remove_service(service)
    await ctx.deployments.stop_instance(service)
    return ok({})


async def pause_service(request: Request) -> Response:
    ctx = context_of(request)
    service = await current(ctx.state, *_service_of(request))
    await read_json(request, required=False)
    if service.paused:
        raise ConflictError(f"Service {service.id!r} is already paused", status=409)
    service.paused = True
    service.instances_before_pause = service.instances or 1
    service.instances = 0
    service.rollout = None
    service.updated_at = utcnow()
    service.set_status("COMPLETED", "SCALING")
    await ctx.deployments.stop_instance(service)
    return ok({})


async def resume_service(request: Request) -> Response:
    ctx = context_of(request)
    service = await current(ctx.state, *_service_of(request))
    body = check_instances_body(await read_json(request, required=False), what="resume")
    if not service.paused:
        raise ConflictError(f"Service {service.id!r} is not paused", status=409)
    service.paused = False
    instances = body.get("instances")
    service.instances = service.instances_before_pause if instances is None else instances
    service.updated_at = utcnow()
    await ctx.deployments.roll_out(service, "SCALING")
    return ok({})


async def restart_service(request: Request) -> Response:
    ctx = context_of(request)
    service = await current(ctx.state, *_service_of(request))
    await read_json(request, required=False)
    if service.paused:
        raise ConflictError(f"Service {service.id!r} is paused: resume it instead", status=409)
    service.updated_at = utcnow()
    await ctx.deployments.roll_out(service, "DEPLOYING")
    return ok({})


async def scale_service(request: Request) -> Response:
    ctx = context_of(request)
    service = await current(ctx.state, *_service_of(request))
    body = check_instances_body(await read_json(request, required=False), what="scale")
    if service.paused:
        raise ConflictError(f"Service {service.id!r} is paused: resume it first", status=409)
    if body.get("deploymentPlan") is not None:
        service.plan = body["deploymentPlan"]
    if body.get("gracePeriodSeconds") is not None:
        service.spec.grace_period = float(body["gracePeriodSeconds"])
    service.updated_at = utcnow()
    instances = body.get("instances")
    if instances is not None and instances != service.instances:
        service.instances = instances
        await ctx.deployments.roll_out(service, "SCALING")
    return ok({})


async def list_containers(request: Request) -> Response:
    state = context_of(request).state
    service = await current(state, *_service_of(request))
    page, pagination = paginate(container_entries(state, service), request.query_params)
    return ok({"containers": page}, pagination)


ROUTES: list[BaseRoute] = [
    *api_routes("/projects", list_projects, ["GET"]),
    *api_routes("/projects", create_project, ["POST"]),
    *api_routes("/projects/{projectId}", get_project, ["GET"]),
    *api_routes("/tags", list_tags, ["GET"]),
    *api_routes("/tags", create_tag, ["POST"]),
    *api_routes("/tags", put_tag, ["PUT"]),
    *api_routes("/tags/{resourceTagId}", get_tag, ["GET"]),
    *api_routes("/tags/{resourceTagId}", patch_tag, ["PATCH"]),
    *api_routes("/tags/{resourceTagId}", delete_tag, ["DELETE"]),
    *api_routes("/projects/{projectId}/services", list_services, ["GET"]),
    *api_routes("/projects/{projectId}/services/deployment", create_service, ["POST"]),
    *api_routes(SERVICE, get_service, ["GET"]),
    *api_routes(SERVICE, delete_service, ["DELETE"]),
    *api_routes(f"{SERVICE}/pause", pause_service, ["POST"]),
    *api_routes(f"{SERVICE}/resume", resume_service, ["POST"]),
    *api_routes(f"{SERVICE}/restart", restart_service, ["POST"]),
    *api_routes(f"{SERVICE}/scale", scale_service, ["POST"]),
    *api_routes(f"{SERVICE}/containers", list_containers, ["GET"]),
]
