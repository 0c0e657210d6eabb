"""Job routes: manual and cron jobs, their runs and containers (contract section 14).

Logs of runs are in :mod:`.job_logs`. Every route has its team-scoped twin.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from pytest_northflank.emulator.context import EmulatorContext, context_of, ok, read_json
from pytest_northflank.emulator.job_runs import RunRecord
from pytest_northflank.emulator.job_views import (
    job_deployment,
    job_detail,
    job_summary,
    run_containers,
    run_view,
)
from pytest_northflank.emulator.jobs import (
    CRON_SETTINGS,
    FLAT_SETTINGS,
    JobRecord,
    Shape,
    check_job_body,
    check_settings,
)
from pytest_northflank.emulator.pagination import paginate
from pytest_northflank.emulator.routes.rest import api_routes
from pytest_northflank.emulator.state import utcnow
from pytest_northflank.emulator.updates import (
    check_deployment_update,
    check_env_body,
    environment_view,
)
from pytest_northflank.emulator.validation import (
    Problems,
    check_description,
    check_plan,
    check_runtime_env,
)
from pytest_northflank.errors import ApiValidationError, ConflictError

JOBS = "/projects/{projectId}/jobs"
JOB = "/projects/{projectId}/jobs/{jobId}"
PATCH_FIELDS = {
    "description", "stageId", "tags", "billing", "disabledCI", "buildConfiguration",
    "buildSettings", "runtimeEnvironment", "runtimeFiles", "buildArguments", "buildFiles",
    "dockerSecretMounts", "healthChecks",
}  # fmt: skip
RUN_FIELDS = {"runtimeEnvironment", "runtimeFiles", "dockerSecretMounts", "billing", "deployment"}


def _job(request: Request) -> JobRecord:
    return context_of(request).jobs.job(
        request.path_params["projectId"], request.path_params["jobId"]
    )


def job_environment(ctx: EmulatorContext, job: JobRecord) -> dict[str, str]:
    """Inherited secret-group variables under the job's own (own win)."""
    inherited = ctx.state.secret_groups.environment(job.project_id, "job", job.id, job.spec.tags)
    return {**inherited, **job.spec.env}


async def list_jobs(request: Request) -> Response:
    ctx = context_of(request)
    project_id = request.path_params["projectId"]
    ctx.state.project(project_id)
    page, pagination = paginate(ctx.jobs.of_project(project_id), request.query_params)
    return ok({"jobs": [job_summary(job) for job in page]}, pagination)


async def _create(request: Request, shape: Shape, *, upsert: bool) -> Response:
    ctx = context_of(request)
    project_id = request.path_params["projectId"]
    ctx.state.project(project_id)
    spec = check_job_body(await read_json(request, required=True), shape)
    existing = ctx.jobs.jobs.get((project_id, spec.id))
    if upsert and existing is not None and existing.spec.job_type != spec.job_type:
        raise ConflictError(f"Job {spec.id!r} is a {existing.spec.job_type} job", status=409)
    return ok(job_detail(ctx.jobs.add(project_id, spec, upsert=upsert)))


async def create_job(request: Request) -> Response:
    return await _create(request, "generic", upsert=False)


async def put_job(request: Request) -> Response:
    return await _create(request, "generic", upsert=True)


async def create_manual(request: Request) -> Response:
    return await _create(request, "manual", upsert=False)


async def put_manual(request: Request) -> Response:
    return await _create(request, "manual", upsert=True)


async def create_cron(request: Request) -> Response:
    return await _create(request, "cron", upsert=False)


async def put_cron(request: Request) -> Response:
    return await _create(request, "cron", upsert=True)


async def get_job(request: Request) -> Response:
    return ok(job_detail(_job(request)))


async def delete_job(request: Request) -> Response:
    ctx = context_of(request)
    await ctx.jobs.delete(_job(request))
    return ok({})


def _apply_patch(job: JobRecord, body: Any, shape: Shape) -> None:
    problems = Problems()
    if not isinstance(body, dict):
        raise ApiValidationError("Validation error: body: must be an object", status=400)
    allowed = set(PATCH_FIELDS)
    allowed |= {"settings"} if shape == "generic" else FLAT_SETTINGS
    if shape == "cron":
        allowed |= CRON_SETTINGS
    for key in body:
        if key not in allowed:
            problems.add(str(key), "is not allowed in a job patch")
    if shape != "generic" and shape != job.spec.job_type:
        problems.add("", f"job {job.id!r} is a {job.spec.job_type} job, not a {shape} job")
    settings = dict(body.get("settings") or {}) if shape == "generic" else body
    settings = {k: v for k, v in settings.items() if k in FLAT_SETTINGS | CRON_SETTINGS}
    if shape == "generic" and isinstance(body.get("settings", {}).get("cron"), dict):
        settings.update(body["settings"]["cron"])
    check_settings(problems, settings, job.spec.job_type)
    description = check_description(problems, body.get("description"))
    env = check_runtime_env(problems, body.get("runtimeEnvironment"))
    problems.raise_if_any()
    _apply_settings(job, settings)
    spec = job.spec
    if "description" in body:
        spec.description = description
    if body.get("tags") is not None:
        spec.tags = list(body["tags"])
    if body.get("runtimeEnvironment") is not None:
        spec.env = env
    if body.get("healthChecks") is not None:
        spec.health_checks = list(body["healthChecks"])
    plan = (body.get("billing") or {}).get("deploymentPlan")
    if isinstance(plan, str):
        spec.plan = plan
    job.updated_at = utcnow()


def _apply_settings(job: JobRecord, settings: dict[str, Any]) -> None:
    spec = job.spec
    if settings.get("backoffLimit") is not None:
        spec.backoff_limit = settings["backoffLimit"]
    if "activeDeadlineSeconds" in settings:
        spec.active_deadline = settings["activeDeadlineSeconds"]
    if settings.get("runOnSourceChange") is not None:
        spec.run_on_source_change = settings["runOnSourceChange"]
    for key in CRON_SETTINGS:
        if key in settings:
            spec.cron[key] = settings[key]


async def patch_job(request: Request) -> Response:
    job = _job(request)
    _apply_patch(job, await read_json(request, required=True), "generic")
    return ok(job_detail(job))


async def patch_manual(request: Request) -> Response:
    job = _job(request)
    _apply_patch(job, await read_json(request, required=True), "manual")
    return ok(job_detail(job))


async def patch_cron(request: Request) -> Response:
    job = _job(request)
    _apply_patch(job, await read_json(request, required=True), "cron")
    return ok(job_detail(job))


async def update_settings(request: Request) -> Response:
    job = _job(request)
    body = await read_json(request, required=True)
    problems = Problems()
    if not isinstance(body, dict):
        raise ApiValidationError("Validation error: body: must be an object", status=400)
    for key in body:
        if key not in FLAT_SETTINGS | {"schedule", "concurrencyPolicy"}:
            problems.add(str(key), "is not allowed")
    check_settings(problems, body, job.spec.job_type)
    problems.raise_if_any()
    _apply_settings(job, body)
    job.updated_at = utcnow()
    return ok({})


async def suspend_job(request: Request) -> Response:
    job = _job(request)
    body = await read_json(request, required=False)
    if job.spec.job_type != "cron":
        raise ApiValidationError("Only cron jobs can be suspended", status=400)
    suspended = body.get("suspended") if isinstance(body, dict) else None
    if not isinstance(suspended, bool):
        raise ApiValidationError("Validation error: suspended: must be a boolean", status=400)
    job.spec.cron["suspended"] = suspended
    return ok({})


async def scale_job(request: Request) -> Response:
    job = _job(request)
    body = await read_json(request, required=False)
    plan = body.get("deploymentPlan") if isinstance(body, dict) else None
    if plan is not None:
        problems = Problems()
        check_plan(problems, str(plan), "deploymentPlan")
        problems.raise_if_any()
        job.spec.plan = str(plan)
    return ok({})


# -- runs ---------------------------------------------------------------------------------------


def _run_overrides(body: Any, job: JobRecord) -> tuple[list[str], dict[str, str]]:
    problems = Problems()
    if not isinstance(body, dict):
        raise ApiValidationError("Validation error: body: must be an object", status=400)
    for key in body:
        if key not in RUN_FIELDS:
            problems.add(str(key), "is not allowed when starting a run")
    env = check_runtime_env(problems, body.get("runtimeEnvironment"))
    argv = list(job.spec.argv)
    deployment = body.get("deployment")
    if deployment is not None:
        update = check_deployment_update(problems, deployment, "deployment")
        if update is not None and update.argv is not None:
            argv = update.argv
    problems.raise_if_any()
    return argv, env


async def start_run(request: Request) -> Response:
    ctx = context_of(request)
    job = _job(request)
    argv, overrides = _run_overrides(await read_json(request, required=False), job)
    run = ctx.jobs.start(job, argv, {**job_environment(ctx, job), **overrides})
    return ok({"id": run.id, "runName": run.run_name})


def _run(request: Request) -> RunRecord:
    job = _job(request)
    return context_of(request).jobs.run(job, request.path_params["runId"])


async def list_runs(request: Request) -> Response:
    ctx = context_of(request)
    page, pagination = paginate(ctx.jobs.runs_of(_job(request)), request.query_params)
    return ok({"runs": [run_view(run) for run in page]}, pagination)


async def get_run(request: Request) -> Response:
    return ok(run_view(_run(request)))


async def abort_run(request: Request) -> Response:
    await context_of(request).jobs.abort(_run(request))
    return ok({})


async def list_containers(request: Request) -> Response:
    ctx = context_of(request)
    job = _job(request)
    run_id = request.query_params.get("runId")
    runs = ctx.jobs.runs_of(job)
    if run_id:
        run: RunRecord | None = ctx.jobs.run(job, run_id)
    else:
        run = runs[0] if runs else None
    containers = run_containers(run) if run is not None else []
    page, pagination = paginate(containers, request.query_params)
    return ok({"containers": page, "runId": run.id if run is not None else ""}, pagination)


# -- deployment and runtime environment ---------------------------------------------------------


async def get_deployment(request: Request) -> Response:
    return ok(job_deployment(_job(request)))


async def update_deployment(request: Request) -> Response:
    job = _job(request)
    problems = Problems()
    update = check_deployment_update(problems, await read_json(request, required=True), "")
    problems.raise_if_any()
    assert update is not None
    if update.image is not None:
        job.spec.image = update.image
    if update.docker is not None:
        job.spec.docker = update.docker
        job.spec.argv = update.argv or []
    job.updated_at = utcnow()
    return ok({})


async def get_runtime_environment(request: Request) -> Response:
    ctx = context_of(request)
    job = _job(request)
    inherited = ctx.state.secret_groups.inherited(job.project_id, "job", job.id, job.spec.tags)
    return ok(environment_view(job.spec.env, inherited, request.query_params.get("show")))


async def update_runtime_environment(request: Request) -> Response:
    job = _job(request)
    job.spec.env = check_env_body(await read_json(request, required=True))
    job.updated_at = utcnow()
    return ok({})


async def get_health_checks(request: Request) -> Response:
    return ok({"healthChecks": list(_job(request).spec.health_checks)})


ROUTES: list[BaseRoute] = [
    *api_routes(JOBS, list_jobs, ["GET"]),
    *api_routes(JOBS, create_job, ["POST"]),
    *api_routes(JOBS, put_job, ["PUT"]),
    *api_routes(f"{JOBS}/manual", create_manual, ["POST"]),
    *api_routes(f"{JOBS}/manual", put_manual, ["PUT"]),
    *api_routes(f"{JOBS}/cron", create_cron, ["POST"]),
    *api_routes(f"{JOBS}/cron", put_cron, ["PUT"]),
    *api_routes(f"{JOBS}/manual/{{jobId}}", patch_manual, ["PATCH"]),
    *api_routes(f"{JOBS}/cron/{{jobId}}", patch_cron, ["PATCH"]),
    *api_routes(JOB, get_job, ["GET"]),
    *api_routes(JOB, patch_job, ["PATCH"]),
    *api_routes(JOB, delete_job, ["DELETE"]),
    *api_routes(f"{JOB}/settings", update_settings, ["POST"]),
    *api_routes(f"{JOB}/suspend", suspend_job, ["POST"]),
    *api_routes(f"{JOB}/scale", scale_job, ["POST"]),
    *api_routes(f"{JOB}/runs", list_runs, ["GET"]),
    *api_routes(f"{JOB}/runs", start_run, ["POST"]),
    *api_routes(f"{JOB}/runs/{{runId}}", get_run, ["GET"]),
    *api_routes(f"{JOB}/runs/{{runId}}", abort_run, ["DELETE"]),
    *api_routes(f"{JOB}/containers", list_containers, ["GET"]),
    *api_routes(f"{JOB}/deployment", get_deployment, ["GET"]),
    *api_routes(f"{JOB}/deployment", update_deployment, ["POST"]),
    *api_routes(f"{JOB}/runtime-environment", get_runtime_environment, ["GET"]),
    *api_routes(f"{JOB}/runtime-environment", update_runtime_environment, ["POST"]),
    *api_routes(f"{JOB}/health-checks", get_health_checks, ["GET"]),
]
