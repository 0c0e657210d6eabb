"""Service update routes: PATCH/PUT, deployment, runtime environment, ports, health checks
(contract section 12).

Applied as Northflank applies them: a change of image, command, environment, plan, ports or
tags rolls the container (the sandbox restarts with the new values and the status goes
``PENDING`` and back to ``COMPLETED``); a change of ``instances`` scales; descriptions and
health checks are stored and shown without a restart.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from pytest_northflank.emulator.context import EmulatorContext, context_of, ok, read_json
from pytest_northflank.emulator.deployments import current
from pytest_northflank.emulator.routes.rest import SERVICE, api_routes
from pytest_northflank.emulator.state import ServiceRecord, utcnow
from pytest_northflank.emulator.updates import (
    check_deployment_update,
    check_env_body,
    check_health_checks,
    check_ports,
    environment_details,
    environment_view,
    health_checks_view,
)
from pytest_northflank.emulator.validation import (
    MAX_INSTANCES,
    SERVICE_FIELDS,
    Problems,
    check_description,
    check_plan,
    check_runtime_env,
    check_service_body,
    check_tag_name,
    is_int,
)
from pytest_northflank.emulator.views import ports_with_dns, service_detail
from pytest_northflank.errors import ApiValidationError

PATCH_FIELDS = SERVICE_FIELDS - {"name", "infrastructure", "createOptions"}
ECHOED = ("stageId", "loadBalancing", "autoscaling")


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["projectId"], request.path_params["serviceId"]


async def _roll(ctx: EmulatorContext, service: ServiceRecord, restart: bool, scale: bool) -> None:
    service.updated_at = utcnow()
    if service.paused:
        return
    if restart:
        await ctx.deployments.roll_out(service, "DEPLOYING")
    elif scale:
        await ctx.deployments.roll_out(service, "SCALING")


def _check_tags_exist(ctx: EmulatorContext, tags: list[str]) -> None:
    if not ctx.state.config.require_existing_tags:
        return
    missing = [name for name in tags if ctx.state.tag_by_name(name) is None]
    if missing:
        raise ApiValidationError(
            f"Tag {missing[0]!r} not found: create it first (POST /v1/tags)",
            status=400,
            details=[{"path": ["tags"], "message": f"unknown tag {missing[0]!r}"}],
        )


async def patch_service(request: Request) -> Response:
    """``PATCH .../services/deployment/{s}``: objects merge, arrays and maps replace."""
    ctx = context_of(request)
    service = await current(ctx.state, *_ids(request))
    body = await read_json(request, required=True)
    problems = Problems()
    if not isinstance(body, dict):
        raise ApiValidationError("Validation error: body: must be an object", status=400)
    for key in body:
        if key not in PATCH_FIELDS:
            problems.add(str(key), "cannot be changed by a patch" if key == "name" else
                         "is not allowed")  # fmt: skip
    spec = service.spec
    description = check_description(problems, body.get("description"))
    tags = [t for i, v in enumerate(body.get("tags") or []) if
            (t := check_tag_name(problems, v, f"tags.{i}"))]  # fmt: skip
    plan = (body.get("billing") or {}).get("deploymentPlan")
    if plan is not None:
        check_plan(problems, str(plan), "billing.deploymentPlan")
    deployment = body.get("deployment")
    instances = None
    update = None
    if deployment is not None:
        if not isinstance(deployment, dict):
            problems.add("deployment", "must be an object")
            deployment = {}
        instances = deployment.get("instances")
        if instances is None:
            problems.add("deployment.instances", "is required when deployment is given")
        elif not is_int(instances) or not 0 <= instances <= MAX_INSTANCES:
            problems.add("deployment.instances", f"must be from 0 to {MAX_INSTANCES}")
        sources = {k: deployment[k] for k in ("external", "internal", "docker", "buildpack")
                   if k in deployment}  # fmt: skip
        update = check_deployment_update(problems, sources, "deployment")
    env = check_runtime_env(problems, body.get("runtimeEnvironment"))
    if body.get("runtimeFiles"):
        problems.add("runtimeFiles", "runtime files are not supported by the emulator")
    ports = check_ports(problems, body["ports"], "ports", spec.ports) if "ports" in body else None
    checks = (
        check_health_checks(problems, body["healthChecks"], "healthChecks")
        if "healthChecks" in body
        else None
    )
    problems.raise_if_any()
    if body.get("tags") is not None:
        _check_tags_exist(ctx, tags)

    before = (spec.image, list(spec.argv), dict(spec.env), service.plan, list(spec.ports),
              list(spec.tags))  # fmt: skip
    if "description" in body:
        spec.description = description
    if body.get("tags") is not None:
        spec.tags = tags
    if plan is not None:
        service.plan = str(plan)
    if update is not None and update.image is not None:
        spec.image = update.image
    if update is not None and update.docker is not None:
        spec.docker, spec.argv = update.docker, list(update.argv or [])
    if body.get("runtimeEnvironment") is not None:
        spec.env = env
    if ports is not None:
        spec.ports = ports
    if checks is not None:
        spec.echoed["healthChecks"] = checks
    if isinstance(deployment, dict):
        _merge_deployment(service, deployment)
    for key in ECHOED:
        if key in body:
            spec.echoed[key] = body[key]
    after = (spec.image, spec.argv, spec.env, service.plan, spec.ports, spec.tags)
    scale = instances is not None and instances != service.instances
    if instances is not None:
        service.instances = instances
    await _roll(ctx, service, before != after, scale)
    return ok(service_detail(service))


def _merge_deployment(service: ServiceRecord, deployment: dict[str, Any]) -> None:
    echo = service.spec.deployment_echo
    for key in ("storage", "strategy", "zonalRedundancy", "gradualRolloutStrategyId", "ssh",
                "metadata", "gracePeriodSeconds"):  # fmt: skip
        if key not in deployment:
            continue
        old, new = echo.get(key), deployment[key]
        echo[key] = {**old, **new} if isinstance(old, dict) and isinstance(new, dict) else new
        if key == "gracePeriodSeconds" and is_int(new):
            service.spec.grace_period = float(new)


async def put_service(request: Request) -> Response:
    """``PUT .../services/deployment``: create, or replace the service of that name."""
    ctx = context_of(request)
    project_id = request.path_params["projectId"]
    ctx.state.project(project_id)
    spec = check_service_body(await read_json(request, required=True))
    service = ctx.state.services.get((project_id, spec.id))
    if service is None:
        service = ctx.state.add_service(project_id, spec)
        await ctx.deployments.roll_out(service, "DEPLOYING")
        return ok(service_detail(service))
    _check_tags_exist(ctx, spec.tags)
    service.spec, service.plan, service.instances = spec, spec.plan, spec.instances
    await _roll(ctx, service, True, False)
    return ok(service_detail(service))


async def get_deployment(request: Request) -> Response:
    service = await current(context_of(request).state, *_ids(request))
    return ok(service_detail(service)["deployment"])


async def update_deployment(request: Request) -> Response:
    """``POST .../services/{s}/deployment``: a new image and/or command, then a rollout."""
    ctx = context_of(request)
    service = await current(ctx.state, *_ids(request))
    problems = Problems()
    update = check_deployment_update(problems, await read_json(request, required=True), "")
    problems.raise_if_any()
    assert update is not None
    if update.image is not None:
        service.spec.image = update.image
    if update.docker is not None:
        service.spec.docker, service.spec.argv = update.docker, list(update.argv or [])
    await _roll(ctx, service, True, False)
    return ok({})


async def get_runtime_environment(request: Request) -> Response:
    ctx = context_of(request)
    service = await current(ctx.state, *_ids(request))
    inherited = ctx.state.secret_groups.inherited(
        service.project_id, "service", service.id, service.spec.tags
    )
    show = request.query_params.get("show")
    if show not in (None, "", "this", "inherited", "all"):
        raise ApiValidationError("show must be this, inherited or all", status=400)
    return ok(environment_view(service.spec.env, inherited, show))


async def get_runtime_environment_details(request: Request) -> Response:
    ctx = context_of(request)
    service = await current(ctx.state, *_ids(request))
    inherited = ctx.state.secret_groups.inherited(
        service.project_id, "service", service.id, service.spec.tags
    )
    return ok(environment_details(service.spec.env, inherited))


async def update_runtime_environment(request: Request) -> Response:
    """A full replacement of the service's own variables; the container restarts."""
    ctx = context_of(request)
    service = await current(ctx.state, *_ids(request))
    service.spec.env = check_env_body(await read_json(request, required=True))
    await _roll(ctx, service, True, False)
    return ok({"success": True, "restartSuccessful": not service.paused})


async def get_ports(request: Request) -> Response:
    service = await current(context_of(request).state, *_ids(request))
    return ok({"ports": ports_with_dns(service)})


async def update_ports(request: Request) -> Response:
    """``POST .../ports``: the list replaces the old one (ids passed back are kept)."""
    ctx = context_of(request)
    service = await current(ctx.state, *_ids(request))
    body = await read_json(request, required=True)
    problems = Problems()
    if not isinstance(body, dict) or "ports" not in body:
        raise ApiValidationError("Validation error: ports: is required", status=400)
    ports = check_ports(problems, body["ports"], "ports", service.spec.ports)
    problems.raise_if_any()
    changed = ports != service.spec.ports
    service.spec.ports = ports
    await _roll(ctx, service, changed, False)
    return ok({})


async def get_health_checks(request: Request) -> Response:
    service = await current(context_of(request).state, *_ids(request))
    return ok({"healthChecks": health_checks_view(service.spec.echoed.get("healthChecks", []))})


async def update_health_checks(request: Request) -> Response:
    ctx = context_of(request)
    service = await current(ctx.state, *_ids(request))
    body = await read_json(request, required=True)
    problems = Problems()
    if not isinstance(body, dict) or "healthChecks" not in body:
        raise ApiValidationError("Validation error: healthChecks: is required", status=400)
    service.spec.echoed["healthChecks"] = check_health_checks(
        problems, body["healthChecks"], "healthChecks"
    )
    problems.raise_if_any()
    service.updated_at = utcnow()
    return ok({})


DEPLOYMENT = "/projects/{projectId}/services/deployment"
ROUTES: list[BaseRoute] = [
    *api_routes(DEPLOYMENT, put_service, ["PUT"]),
    *api_routes(f"{DEPLOYMENT}/{{serviceId}}", patch_service, ["PATCH"]),
    *api_routes(f"{SERVICE}/deployment", get_deployment, ["GET"]),
    *api_routes(f"{SERVICE}/deployment", update_deployment, ["POST"]),
    *api_routes(f"{SERVICE}/runtime-environment", get_runtime_environment, ["GET"]),
    *api_routes(f"{SERVICE}/runtime-environment", update_runtime_environment, ["POST"]),
    *api_routes(f"{SERVICE}/runtime-environment/details", get_runtime_environment_details, ["GET"]),
    *api_routes(f"{SERVICE}/ports", get_ports, ["GET"]),
    *api_routes(f"{SERVICE}/ports", update_ports, ["POST"]),
    *api_routes(f"{SERVICE}/health-checks", get_health_checks, ["GET"]),
    *api_routes(f"{SERVICE}/health-checks", update_health_checks, ["POST"]),
]
