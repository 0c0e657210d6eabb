"""Manual and cron jobs (contract section 14): the validated job spec and its records.

Three create routes send two body shapes: ``/jobs/manual`` and ``/jobs/cron`` carry the run
settings at the top level (``backoffLimit``, ``activeDeadlineSeconds``, ...), the generic
``/jobs`` carries them under ``settings`` (``settings.cron`` makes a cron job). Both become
one :class:`JobSpec`. Cron schedules are stored and shown; the emulator never fires them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pytest_northflank.emulator.validation import (
    IMAGE_RE,
    PLAN_RE,
    Problems,
    check_description,
    check_docker,
    check_name,
    check_plan,
    check_runtime_env,
    check_tag_name,
    derive_id,
    is_int,
    type_name,
)

JobType = Literal["manual", "cron"]
Shape = Literal["manual", "cron", "generic"]
JOB_NAME_MAX = 52
CRON_RE = re.compile(
    r"^(@(annually|yearly|monthly|weekly|daily|hourly)|"
    r"((\*|\d+([-/,]\d+)*|\*/\d+)\s+){4}(\*|\d+([-/,]\d+)*|\*/\d+))$"
)
CONCURRENCY = ("allow", "forbid", "replace")
RUN_ON_SOURCE_CHANGE = ("never", "cd-promote", "always")
COMMON_FIELDS = {
    "name", "description", "stageId", "tags", "infrastructure", "billing", "deployment",
    "runtimeEnvironment", "runtimeFiles", "buildArguments", "buildFiles", "dockerSecretMounts",
    "healthChecks", "disabledCI", "buildConfiguration", "buildSettings",
}  # fmt: skip
FLAT_SETTINGS = {"backoffLimit", "activeDeadlineSeconds", "runOnSourceChange"}
CRON_SETTINGS = {"schedule", "suspended", "concurrencyPolicy"}
JOB_DEPLOYMENT_FIELDS = {
    "external", "internal", "vcs", "docker", "buildpack", "storage", "gpu",
    "gracePeriodSeconds", "metadata",
}  # fmt: skip


@dataclass
class JobSpec:
    name: str
    id: str
    job_type: JobType
    plan: str
    image: str | None
    docker: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    backoff_limit: int
    active_deadline: int | None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    run_on_source_change: str = "never"
    cron: dict[str, Any] = field(default_factory=dict)
    health_checks: list[Any] = field(default_factory=list)
    deployment_echo: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobRecord:
    project_id: str
    spec: JobSpec
    created_at: datetime
    updated_at: datetime
    deleted: bool = False

    @property
    def id(self) -> str:
        return self.spec.id


def _settings_of(body: dict[str, Any], shape: Shape, problems: Problems) -> dict[str, Any]:
    """The run settings in one flat dict, whichever shape the body has."""
    if shape != "generic":
        return {k: body[k] for k in FLAT_SETTINGS | CRON_SETTINGS if k in body}
    settings = body.get("settings")
    if settings is None:
        return {"backoffLimit": 0}
    if not isinstance(settings, dict):
        problems.add("settings", f"must be an object, got {type_name(settings)}")
        return {}
    flat = {k: settings[k] for k in FLAT_SETTINGS if k in settings}
    for key in settings:
        if key not in FLAT_SETTINGS | {"cron"}:
            problems.add(f"settings.{key}", "is not allowed")
    cron = settings.get("cron")
    if isinstance(cron, dict):
        flat.update({k: cron[k] for k in CRON_SETTINGS if k in cron})
        flat["cron"] = True
    return flat


def check_settings(problems: Problems, settings: dict[str, Any], job_type: JobType) -> None:
    """Check flat run settings (also the body of ``POST .../settings``)."""
    backoff = settings.get("backoffLimit")
    if backoff is not None and (not is_int(backoff) or backoff < 0):
        problems.add("backoffLimit", "must be an integer >= 0")
    deadline = settings.get("activeDeadlineSeconds")
    if deadline is not None and (not is_int(deadline) or deadline < 1):
        problems.add("activeDeadlineSeconds", "must be an integer >= 1 or null")
    rosc = settings.get("runOnSourceChange")
    if rosc is not None and rosc not in RUN_ON_SOURCE_CHANGE:
        problems.add("runOnSourceChange", f"must be one of {', '.join(RUN_ON_SOURCE_CHANGE)}")
    cron_keys = [key for key in CRON_SETTINGS if settings.get(key) is not None]
    if job_type == "manual":
        for key in cron_keys:
            problems.add(key, "is only available for cron jobs")
        return
    schedule = settings.get("schedule")
    if schedule is not None and (not isinstance(schedule, str) or not CRON_RE.match(schedule)):
        problems.add("schedule", "must be a cron expression (5 fields) or @daily and the like")
    policy = settings.get("concurrencyPolicy")
    if policy is not None and policy not in CONCURRENCY:
        problems.add("concurrencyPolicy", f"must be one of {', '.join(CONCURRENCY)}")


def check_job_body(body: Any, shape: Shape) -> JobSpec:
    """Validate a create/put body of ``/jobs/manual``, ``/jobs/cron`` or ``/jobs``."""
    problems = Problems()
    if not isinstance(body, dict):
        problems.add("", f"must be an object, got {type_name(body)}")
        problems.raise_if_any()
    assert isinstance(body, dict)
    allowed = set(COMMON_FIELDS)
    allowed |= {"settings"} if shape == "generic" else FLAT_SETTINGS
    if shape == "cron":
        allowed |= CRON_SETTINGS
    for key in body:
        if key not in allowed:
            problems.add(str(key), "is not allowed")
    name = check_name(problems, body.get("name"))
    if name is not None and len(name) > JOB_NAME_MAX:
        problems.add("name", f"a job name is at most {JOB_NAME_MAX} characters")
    description = check_description(problems, body.get("description"))
    tags = _tags(problems, body.get("tags"))
    settings = _settings_of(body, shape, problems)
    job_type: JobType = "cron" if shape == "cron" or settings.pop("cron", False) else "manual"
    if shape != "generic" and body.get("backoffLimit") is None:
        problems.add("backoffLimit", "is required")
    check_settings(problems, settings, job_type)
    billing = body.get("billing")
    plan = None
    if not isinstance(billing, dict) or not isinstance(billing.get("deploymentPlan"), str):
        problems.add("billing.deploymentPlan", "is required")
    else:
        plan = billing["deploymentPlan"]
        check_plan(problems, plan, "billing.deploymentPlan")
    image, docker, argv, echo = _check_job_deployment(problems, body.get("deployment"))
    env = check_runtime_env(problems, body.get("runtimeEnvironment"))
    if body.get("runtimeFiles"):
        problems.add("runtimeFiles", "runtime files are not supported by the emulator")
    problems.raise_if_any()
    assert name is not None
    assert plan is not None
    return JobSpec(
        name=name,
        id=derive_id(name),
        job_type=job_type,
        plan=plan,
        image=image,
        docker=docker,
        argv=argv,
        env=env,
        backoff_limit=int(settings.get("backoffLimit") or 0),
        active_deadline=settings.get("activeDeadlineSeconds"),
        description=description,
        tags=tags,
        run_on_source_change=settings.get("runOnSourceChange") or "never",
        cron={k: settings[k] for k in CRON_SETTINGS if settings.get(k) is not None},
        health_checks=list(body.get("healthChecks") or []),
        deployment_echo=echo,
    )


def _tags(problems: Problems, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add("tags", f"must be an array of tag names, got {type_name(value)}")
        return []
    return [t for i, v in enumerate(value) if (t := check_tag_name(problems, v, f"tags.{i}"))]


def _check_job_deployment(
    problems: Problems, value: Any
) -> tuple[str | None, dict[str, Any], list[str], dict[str, Any]]:
    """Image (None: "choose later"), docker echo, argv and the other fields to echo."""
    if value is None:
        return None, {"configType": "default"}, [], {}
    if not isinstance(value, dict):
        problems.add("deployment", f"must be an object, got {type_name(value)}")
        return None, {}, [], {}
    for key in value:
        if key not in JOB_DEPLOYMENT_FIELDS:
            problems.add(f"deployment.{key}", "is not allowed")
    for source in ("internal", "vcs"):
        if value.get(source) is not None:
            problems.add(f"deployment.{source}", "builds are not available on the emulator; "
                         "use deployment.external.imagePath")  # fmt: skip
    if value.get("buildpack") is not None:
        problems.add("deployment.buildpack", "buildpacks need a build; not on the emulator")
    image = None
    external = value.get("external")
    if external is not None:
        image = check_image(problems, external, "deployment.external")
    docker, argv = check_docker(problems, value.get("docker"))
    if not docker or docker.get("configType") == "default":
        argv = []  # the image's own command: unknown to the emulator (see start_run)
    echo = {k: value[k] for k in ("storage", "gracePeriodSeconds", "metadata") if k in value}
    return image, docker, argv, echo


def check_image(problems: Problems, external: Any, path: str) -> str | None:
    if not isinstance(external, dict):
        problems.add(path, "must be an object with imagePath")
        return None
    image = external.get("imagePath")
    if not isinstance(image, str):
        problems.add(f"{path}.imagePath", "is required")
        return None
    if not IMAGE_RE.match(image):
        problems.add(f"{path}.imagePath", f"{image!r} is not a valid image reference")
    creds = external.get("credentials")
    if creds is not None and (not isinstance(creds, str) or not PLAN_RE.match(creds)):
        problems.add(f"{path}.credentials", "must be a credentials id")
    return image
