"""JSON shapes of jobs and runs (contract sections 14.2, 14.4, 14.5)."""

from __future__ import annotations

from typing import Any

from pytest_northflank.emulator.job_runs import RunRecord
from pytest_northflank.emulator.jobs import JobRecord
from pytest_northflank.emulator.state import CLUSTER, REGION, iso

OWNER = "emulator"


def job_summary(job: JobRecord) -> dict[str, Any]:
    spec = job.spec
    summary: dict[str, Any] = {
        "id": job.id,
        "uid": f"{job.project_id}-{job.id}",
        "projectId": job.project_id,
        "appId": f"/{OWNER}/{job.project_id}/{job.id}",
        "name": spec.name,
        "tags": list(spec.tags),
        "jobType": spec.job_type,
        "disabledCI": True,
        "disabledCD": True,
    }
    if spec.description is not None:
        summary["description"] = spec.description
    if spec.job_type == "cron":
        summary["suspended"] = bool(spec.cron.get("suspended", False))
    return summary


def job_settings(job: JobRecord) -> dict[str, Any]:
    spec = job.spec
    settings: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "activeDeadlineSeconds": spec.active_deadline,
        "runOnSourceChange": spec.run_on_source_change,
    }
    if spec.job_type == "cron":
        cron = dict(spec.cron)
        if "concurrencyPolicy" in cron:
            cron["concurrencyPolicy"] = str(cron["concurrencyPolicy"]).capitalize()
        settings["cron"] = cron
    return settings


def job_deployment(job: JobRecord) -> dict[str, Any]:
    """``GET .../jobs/{j}/deployment`` (and the deployment part of the job)."""
    spec = job.spec
    deployment: dict[str, Any] = {
        "region": REGION,
        "docker": dict(spec.docker),
        **spec.deployment_echo,
    }
    if spec.image is not None:
        deployment["external"] = {
            "imagePath": spec.image,
            "registryProvider": "dockerhub",
            "privateImage": False,
        }
        deployment["imageUrl"] = spec.image
    return deployment


def job_detail(job: JobRecord) -> dict[str, Any]:
    """``GET .../jobs/{j}`` and the create/patch answers (flat settings echoed too)."""
    spec = job.spec
    settings = job_settings(job)
    return {
        **job_summary(job),
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
        "billing": {"deploymentPlan": spec.plan},
        "deployment": job_deployment(job),
        "settings": settings,
        "backoffLimit": spec.backoff_limit,
        "activeDeadlineSeconds": spec.active_deadline,
        "runOnSourceChange": spec.run_on_source_change,
        **{key: value for key, value in spec.cron.items()},
        "runtimeEnvironment": dict(spec.env),
        "healthChecks": list(spec.health_checks),
        "status": {"build": {"status": "SUCCESS"}},
        "cluster": dict(CLUSTER),
    }


def run_view(run: RunRecord) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": run.id,
        "runName": run.run_name,
        "status": run.status,
        "concluded": run.concluded,
        **run.counters(),
        "backoffLimit": run.backoff_limit,
        "startedAt": iso(run.started_at),
        "concludedAt": iso(run.concluded_at) if run.concluded_at is not None else None,
    }
    if run.message is not None:
        view["message"] = run.message
    return view


def run_containers(run: RunRecord) -> list[dict[str, Any]]:
    return [
        {
            "name": attempt.name,
            "createdAt": int(attempt.created_at.timestamp()),
            "updatedAt": int((run.concluded_at or attempt.created_at).timestamp()),
            "status": attempt.task_status(),
            "nodeName": "nf-emulator",
        }
        for attempt in run.attempts
    ]
