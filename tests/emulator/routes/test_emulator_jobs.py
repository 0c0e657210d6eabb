"""Manual jobs and their runs on the emulator: real containers running to completion."""

from __future__ import annotations

import json
from typing import Any

import pytest
from emulator_testing import (
    PROJECT,
    Api,
    ExecRun,
    collect,
    eventually,
    init_frame,
    send,
    unique_name,
    ws_url,
)
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import ClientConnection, connect

from pytest_northflank.emulator import EmulatorServer

JOBS = f"/v1/projects/{PROJECT}/jobs"


def job_body(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "backoffLimit": 0,
        "deployment": {
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "customCommand", "customCommand": command},
        },
        **extra,
    }


def wait_run(api: Api, job_id: str, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def concluded() -> bool:
        found.update(api.ok("GET", f"{JOBS}/{job_id}/runs/{run_id}"))
        return bool(found["concluded"])

    assert eventually(concluded, timeout=30), found
    return found


def start(api: Api, job_id: str, body: dict[str, Any] | None = None) -> str:
    started = api.ok("POST", f"{JOBS}/{job_id}/runs", json=body or {})
    assert started["runName"].startswith(job_id)
    return str(started["id"])


def logs(api: Api, job_id: str, run_id: str) -> list[str]:
    lines = api.ok("GET", f"{JOBS}/{job_id}/logs", params={"runId": run_id, "direction": "forward"})
    return [line["log"] for line in lines]


def test_a_manual_job_runs_its_command_to_success_with_overrides(api: Api) -> None:
    name = unique_name("job")
    command = "sh -c 'echo start; echo \"$GREETING $OWN\"'"
    created = api.ok(
        "POST", f"{JOBS}/manual", json=job_body(name, command, runtimeEnvironment={"OWN": "own"})
    )
    assert created["jobType"] == "manual"
    run_id = start(api, created["id"], {"runtimeEnvironment": {"GREETING": "hello"}})
    run = wait_run(api, created["id"], run_id)
    assert run["status"] == "SUCCESS"
    assert (run["succeeded"], run["failed"], run["active"]) == (1, 0, 0)
    assert run["startedAt"] <= run["concludedAt"]
    assert logs(api, created["id"], run_id) == ["start", "hello own"]
    listed = api.ok("GET", f"{JOBS}/{created['id']}/runs")["runs"]
    assert [r["id"] for r in listed] == [run_id]
    containers = api.ok("GET", f"{JOBS}/{created['id']}/containers")
    assert containers["runId"] == run_id
    assert containers["containers"][0]["status"] == "TASK_FINISHED"


def test_a_failing_command_is_retried_backoff_limit_times_then_failed(api: Api) -> None:
    created = api.ok(
        "POST",
        f"{JOBS}/manual",
        json={**job_body(unique_name("job"), "sh -c 'echo try; exit 3'"), "backoffLimit": 2},
    )
    run = wait_run(api, created["id"], start(api, created["id"]))
    assert run["status"] == "FAILED"
    assert run["failed"] == 3
    assert "BackoffLimitExceeded" in run["message"]
    containers = api.ok("GET", f"{JOBS}/{created['id']}/containers")["containers"]
    assert [c["status"] for c in containers] == ["TASK_FAILED"] * 3
    assert logs(api, created["id"], run["id"]) == ["try"] * 3


def test_active_deadline_kills_the_run(api: Api) -> None:
    body = job_body(unique_name("job"), "sleep 600", activeDeadlineSeconds=1)
    created = api.ok("POST", f"{JOBS}/manual", json=body)
    run = wait_run(api, created["id"], start(api, created["id"]))
    assert run["status"] == "FAILED"
    assert "DeadlineExceeded" in run["message"]


def test_abort_ends_a_running_run_as_failed(api: Api) -> None:
    created = api.ok("POST", f"{JOBS}/manual", json=job_body(unique_name("job"), "sleep 600"))
    run_id = start(api, created["id"])
    assert api.ok("GET", f"{JOBS}/{created['id']}/runs/{run_id}")["status"] == "RUNNING"
    assert api.ok("DELETE", f"{JOBS}/{created['id']}/runs/{run_id}") == {}
    run = api.ok("GET", f"{JOBS}/{created['id']}/runs/{run_id}")
    assert (run["status"], run["concluded"]) == ("FAILED", True)
    assert api.ok("DELETE", f"{JOBS}/{created['id']}/runs/{run_id}") == {}  # idempotent


def test_prefect_worker_sequence(api: Api) -> None:
    """The call sequence of prefect-northflank's worker (generic create with settings{},
    start, poll the run, delete the job) replayed, as that package cannot be installed here;
    the run also gets a runtime-environment override and its logs are read."""
    body = {
        "name": unique_name("pf-flow"),
        "description": "Prefect job: pf-flow",
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {
            "external": {"imagePath": "prefecthq/prefect:3-python3.12"},
            "docker": {
                "configType": "customCommand",
                "customCommand": "sh -c 'echo flow-run $PREFECT__FLOW_RUN_ID "
                "$PREFECT_LOGGING_LEVEL'",
            },
        },
        "runtimeEnvironment": {"PREFECT__FLOW_RUN_ID": "abc", "PREFECT_LOGGING_LEVEL": "INFO"},
        "settings": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 3600,
            "runOnSourceChange": "never",
        },
    }
    headers = {"Content-Type": "application/json"}
    job_id = api.ok("POST", JOBS, json=body, headers=headers)["id"]
    override = {"runtimeEnvironment": {"PREFECT_LOGGING_LEVEL": "DEBUG"}}
    run_id = api.ok("POST", f"{JOBS}/{job_id}/runs", json=override, headers=headers)["id"]
    assert wait_run(api, job_id, run_id)["status"] == "SUCCESS"
    assert logs(api, job_id, run_id) == ["flow-run abc DEBUG"]
    job = api.ok("GET", f"{JOBS}/{job_id}")
    assert job["settings"]["backoffLimit"] == 3
    assert job["jobType"] == "manual"
    assert api.ok("DELETE", f"{JOBS}/{job_id}", headers=headers) == {}
    assert api.request("GET", f"{JOBS}/{job_id}").status_code == 404


def test_deleting_a_job_kills_its_active_run(api: Api) -> None:
    created = api.ok("POST", f"{JOBS}/manual", json=job_body(unique_name("job"), "sleep 600"))
    start(api, created["id"])
    assert api.ok("DELETE", f"{JOBS}/{created['id']}") == {}
    assert api.ok("GET", "/_emulator/state")["containers"] == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"backoffLimit": None}, "backoffLimit"),
        ({"schedule": "@daily"}, "schedule"),
        ({"activeDeadlineSeconds": 0}, "activeDeadlineSeconds"),
        ({"billing": {"deploymentPlan": "nf-huge"}}, "billing.deploymentPlan"),
        ({"deployment": {"internal": {"id": "x"}}}, "deployment.internal"),
    ],
)
def test_bad_job_bodies_are_refused(api: Api, body: dict[str, Any], where: str) -> None:
    full = {k: v for k, v in {**job_body(unique_name("job"), "true"), **body}.items()
            if v is not None}  # fmt: skip
    response = api.request("POST", f"{JOBS}/manual", json=full)
    assert response.status_code == 400
    paths = [".".join(d["path"]) for d in response.json()["error"]["details"]]
    assert where in paths


def test_jobs_are_listed_paginated_and_names_conflict(api: Api) -> None:
    name = unique_name("job")
    api.ok("POST", f"{JOBS}/manual", json=job_body(name, "true"))
    assert api.request("POST", f"{JOBS}/manual", json=job_body(name, "true")).status_code == 409
    assert api.ok("PUT", f"{JOBS}/manual", json=job_body(name, "echo again"))["id"] == name
    page = api.http.get(JOBS, params={"per_page": 1})
    assert page.json()["data"]["jobs"][0]["id"] == name
    assert "cursor" not in page.json()["pagination"]
    assert api.request("GET", f"{JOBS}/nope/runs/nope").status_code == 404


def test_patch_changes_settings_and_a_job_without_command_cannot_run(api: Api) -> None:
    created = api.ok(
        "POST",
        f"{JOBS}/manual",
        json={
            **job_body(unique_name("job"), "true"),
            "deployment": {"external": {"imagePath": "ubuntu:22.04"}},
        },
    )
    patched = api.ok(
        "PATCH", f"{JOBS}/manual/{created['id']}", json={"backoffLimit": 4, "tags": []}
    )
    assert patched["settings"]["backoffLimit"] == 4
    refused = api.request("PATCH", f"{JOBS}/cron/{created['id']}", json={"schedule": "@daily"})
    assert refused.status_code == 400
    response = api.request("POST", f"{JOBS}/{created['id']}/runs", json={})
    assert response.status_code == 409
    assert "customCommand" in response.json()["error"]["message"]


def test_a_job_log_tail_streams_a_run_then_ends_when_the_job_goes(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    command = "sh -c 'echo one; sleep 600'"
    created = api.ok("POST", f"{JOBS}/manual", json=job_body(unique_name("job"), command))
    run_id = start(api, created["id"])
    url = ws_url(emulator_clean, f"{JOBS}/{created['id']}/logs?queryType=tail&runId={run_id}")
    with connect(url) as ws:
        auth = {"type": "apiToken", "apiToken": emulator_clean.token}
        send(ws, {"type": "init", "data": {"auth": auth}})
        assert json.loads(ws.recv(timeout=30)) == {"type": "init", "data": {"auth": "successful"}}
        seen: list[str] = []
        while "one" not in seen:
            frame = json.loads(ws.recv(timeout=30))
            seen += [line["log"] for line in frame["data"]]
        containers = api.ok("GET", f"{JOBS}/{created['id']}/containers")["containers"]
        assert containers[0]["status"] == "TASK_RUNNING"
        api.ok("DELETE", f"{JOBS}/{created['id']}/runs/{run_id}")
        api.ok("DELETE", f"{JOBS}/{created['id']}")
        with pytest.raises(ConnectionClosedOK):
            drain(ws)


def drain(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=30)


def test_secret_groups_reach_jobs_listed_by_id(api: Api) -> None:
    created = api.ok(
        "POST", f"{JOBS}/manual", json=job_body(unique_name("job"), "sh -c 'echo \"[$SECRET]\"'")
    )
    group = {
        "name": unique_name("sg"),
        "secretType": "environment",
        "priority": 1,
        "restrictions": {"restricted": True, "nfObjects": [{"id": created["id"], "type": "job"}]},
        "secrets": {"variables": {"SECRET": "for-the-job"}},
    }
    api.ok("POST", f"/v1/projects/{PROJECT}/secrets", json=group)
    shown = api.ok("GET", f"{JOBS}/{created['id']}/runtime-environment")
    assert shown["runtimeEnvironment"] == {"SECRET": "for-the-job"}
    run_id = start(api, created["id"])
    assert wait_run(api, created["id"], run_id)["status"] == "SUCCESS"
    assert logs(api, created["id"], run_id) == ["[for-the-job]"]


def test_exec_into_a_running_job_and_not_into_a_finished_one(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    created = api.ok("POST", f"{JOBS}/manual", json=job_body(unique_name("job"), "sleep 600"))
    run_id = start(api, created["id"])
    path = f"/v1/command-exec/projects/{PROJECT}/jobs/{created['id']}"

    def exec_text() -> ExecRun:
        with connect(ws_url(emulator_clean, path)) as ws:
            send(ws, init_frame(emulator_clean.token, command=["sh", "-c", "echo in-job"]))
            return collect(ws)

    assert eventually(lambda: exec_text().text() == "in-job\n")
    api.ok("DELETE", f"{JOBS}/{created['id']}/runs/{run_id}")
    assert "no run is running" in exec_text().error
