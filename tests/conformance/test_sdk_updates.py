"""The official Python SDK (``northflank`` 2.1.0) on the emulator's newer routes: service
updates, secret groups, jobs and runs, identity and the catalogue."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from northflank import ApiClient
from sdk_testing import PROJECT, unique_name


def test_patch_runtime_environment_and_ports(
    sdk: ApiClient, ready_service: Callable[..., str]
) -> None:
    service_id = ready_service("sdk-upd")
    ids = {"project_id": PROJECT, "service_id": service_id}
    patched = sdk.patch.service.deployment(**ids, data={"runtimeEnvironment": {"X": "1"}}).data
    assert patched["runtimeEnvironment"] == {"X": "1"}
    sdk.helpers.wait_for_service_ready(**ids, timeout_s=60, poll_interval_s=0.05)
    answer = sdk.update.service.runtime_environment(
        **ids, data={"runtimeEnvironment": {"Y": "2"}}
    ).data
    assert answer == {"success": True, "restartSuccessful": True}
    shown = sdk.get.service.runtime_environment(**ids, show="this").data
    assert shown["runtimeEnvironment"] == {"Y": "2"}
    sdk.update.service.ports(
        **ids, data={"ports": [{"name": "web", "internalPort": 8000, "protocol": "HTTP"}]}
    )
    assert [p["id"] for p in sdk.get.service.ports(**ids).data["ports"]] == ["web"]
    sdk.helpers.wait_for_service_ready(**ids, timeout_s=60, poll_interval_s=0.05)


def test_secret_groups(sdk: ApiClient) -> None:
    name = unique_name("sdk-sg")
    body: dict[str, Any] = {"name": name, "secretType": "environment", "priority": 3,
                            "secrets": {"variables": {"K": "v"}}}  # fmt: skip
    group_id = sdk.create.secret(project_id=PROJECT, data=body).data["id"]
    listed = sdk.list.secrets.all(project_id=PROJECT)
    assert group_id in [g["id"] for g in listed.data["secrets"]]
    got = sdk.get.secret(project_id=PROJECT, secret_id=group_id).data
    assert got["secrets"]["variables"] == {"K": "v"}
    sdk.delete.secret(project_id=PROJECT, secret_id=group_id)


def test_manual_job_run_and_abort(sdk: ApiClient) -> None:
    body = {
        "name": unique_name("sdk-job"),
        "billing": {"deploymentPlan": "nf-compute-20"},
        "backoffLimit": 0,
        "deployment": {
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "customCommand", "customCommand": "sleep 600"},
        },
    }
    job_id = sdk.create.job.manual(project_id=PROJECT, data=body).data["id"]
    ids = {"project_id": PROJECT, "job_id": job_id}
    run_id = sdk.start.job.run(**ids, data={}).data["id"]
    assert sdk.get.job.run(**ids, run_id=run_id).data["status"] == "RUNNING"
    sdk.abort.job.run(**ids, run_id=run_id)
    deadline = time.monotonic() + 30
    while (run := sdk.get.job.run(**ids, run_id=run_id).data)["status"] == "RUNNING":
        if time.monotonic() > deadline:  # a bound on the wait, not a speed check
            pytest.fail("the aborted run never left RUNNING")
        time.sleep(0.05)
    assert run["status"] == "FAILED"
    assert [r["id"] for r in sdk.get.job.runs(**ids).data["runs"]] == [run_id]
    sdk.delete.job(**ids)


def test_auth_plans_regions(sdk: ApiClient) -> None:
    assert sdk.get.auth().data["tokenKind"] == "api"
    assert "nf-compute-20" in [p["id"] for p in sdk.list.plans().data["plans"]]
    assert sdk.list.regions().data["regions"]
