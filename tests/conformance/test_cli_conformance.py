"""The official Northflank CLI (``@northflank/cli`` 0.9.24, unmodified) against the emulator.

Each everyday command runs as a user would type it, after ``northflank login -t TOKEN --host
URL``. Port forwarding belongs to the ports issue's tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from node_testing import Cli, cli_for
from sdk_testing import PROJECT, deployment, unique_name

from pytest_northflank.emulator import EmulatorServer

P = ("--project", PROJECT)


@pytest.fixture(scope="module")
def cli(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """The CLI logged in to the session's emulator with a token."""
    tool = cli_for(emulator, tmp_path_factory.mktemp("cli-home"))
    done = tool.run("login", "-n", "emu", "--host", emulator.url, "-t", emulator.token)
    assert "Successfully logged in" in done.stdout, done.stdout
    return tool


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=30) as client:
        yield client


def wait_completed(http: httpx.Client, service_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        service: dict[str, Any] = http.get(f"/v1/projects/{PROJECT}/services/{service_id}").json()[
            "data"
        ]
        status = service["status"]["deployment"]["status"]
        if status in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            assert status == "COMPLETED", service["status"]
            return service
        time.sleep(0.05)


def test_login_checks_the_token(emulator: EmulatorServer, tmp_path_factory: Any) -> None:
    tool = cli_for(emulator, tmp_path_factory.mktemp("cli-login"))
    good = tool.run("login", "-n", "good", "--host", emulator.url, "-t", emulator.token)
    assert "Successfully logged in using token login" in good.stdout
    assert emulator.token not in good.stdout + good.stderr
    bad = tool.run("login", "-n", "bad", "--host", emulator.url, "-t", "not-the-token")
    assert "Failed to login with the provided token" in bad.stdout + bad.stderr
    assert [c["name"] for c in tool.read_config()["contexts"]] == ["good"]


def test_projects_plans_and_regions(cli: Cli) -> None:
    assert PROJECT in [p["id"] for p in cli.json("list", "projects")["projects"]]
    assert cli.json("get", "project", *P)["id"] == PROJECT
    plans = [p["id"] for p in cli.json("list", "plans")["plans"]]
    assert "nf-compute-20" in plans
    assert cli.json("list", "regions")["regions"]


def test_service_lifecycle(cli: Cli, http: httpx.Client) -> None:
    name = unique_name("cli")
    created = cli.json(
        "create",
        "service",
        "deployment",
        *P,
        "--input",
        json.dumps(deployment(name, "sh -c 'echo service-started; exec sleep infinity'")),
    )
    service_id = created["id"]
    S = (*P, "--service", service_id)
    try:
        wait_completed(http, service_id)
        assert cli.json("get", "service", *S)["name"] == name
        assert service_id in [s["id"] for s in cli.json("list", "services", *P)["services"]]

        patched = cli.json(
            "patch", "service", "deployment", *S,
            "--input", json.dumps({"runtimeEnvironment": {"GREETING": "patched"}}),
        )  # fmt: skip
        assert patched["runtimeEnvironment"] == {"GREETING": "patched"}
        wait_completed(http, service_id)
        done = cli.run("exec", "service", *S, "--cmd", 'sh -c "echo greeting=$GREETING"')
        assert "greeting=patched" in done.stdout

        env = {"runtimeEnvironment": {"GREETING": "replaced"}}
        updated = cli.json(
            "update", "service", "runtime-environment", *S, "--input", json.dumps(env)
        )
        assert updated == {"success": True, "restartSuccessful": True}
        assert cli.json("get", "service", "runtime-environment", *S)["runtimeEnvironment"] == {
            "GREETING": "replaced"
        }
        wait_completed(http, service_id)

        ports = {"ports": [{"name": "web", "internalPort": 8080, "protocol": "HTTP"}]}
        done = cli.run("update", "service", "ports", *S, "--input", json.dumps(ports))
        assert "completed successfully" in done.stdout
        assert [p["name"] for p in cli.json("get", "service", "ports", *S)["ports"]] == ["web"]
        wait_completed(http, service_id)

        containers = cli.json("get", "service", "containers", *S)["containers"]
        assert containers[0]["status"] == "TASK_RUNNING"
        logs = cli.json("get", "service", "logs", *S)
        assert "service-started" in [line["log"] for line in logs]

        for verb, extra in [("pause", ()), ("resume", ("--input", "{}")), ("restart", ()),
                            ("scale", ("--input", '{"instances": 1}'))]:  # fmt: skip
            done = cli.run(verb, "service", *S, *extra)
            assert "completed successfully" in done.stdout, verb
            if verb != "pause":
                wait_completed(http, service_id)
    finally:
        done = cli.run("delete", "service", *S, "--force")
    assert "completed successfully" in done.stdout
    assert http.get(f"/v1/projects/{PROJECT}/services/{service_id}").status_code == 404


def test_secrets(cli: Cli) -> None:
    name = unique_name("cli-secret")
    body = {"name": name, "secretType": "environment", "priority": 5,
            "secrets": {"variables": {"API_KEY": "k"}}}  # fmt: skip
    created = cli.json("create", "secret", *P, "--input", json.dumps(body))
    G = (*P, "--secretId", created["id"])
    try:
        listed = cli.json("list", "secrets", *P)["secrets"]
        assert created["id"] in [g["id"] for g in listed]
        table = cli.run("list", "secrets", *P).stdout
        assert created["id"] in table
        assert cli.json("get", "secret", *G)["secrets"]["variables"] == {"API_KEY": "k"}
    finally:
        cli.run("delete", "secret", *G, "--force")
    assert created["id"] not in [g["id"] for g in cli.json("list", "secrets", *P)["secrets"]]


def test_jobs_and_runs(cli: Cli) -> None:
    name = unique_name("cli-job")
    body = {
        "name": name,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "backoffLimit": 0,
        "deployment": {
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "customCommand",
                       "customCommand": "sh -c 'echo job says $WORD'"},
        },
    }  # fmt: skip
    job_id = cli.json("create", "job", "manual", *P, "--input", json.dumps(body))["id"]
    J = (*P, "--job", job_id)
    try:
        assert job_id in [j["id"] for j in cli.json("list", "jobs", *P)["jobs"]]
        assert cli.json("get", "job", *J)["jobType"] == "manual"
        started = cli.json(
            "start", "job", "run", *J, "--input", '{"runtimeEnvironment": {"WORD": "hi"}}'
        )
        deadline = time.monotonic() + 30
        while (run := cli.json("get", "job", "run", *J, "--runId", started["id"]))[
            "status"
        ] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run["status"] == "SUCCESS"
        assert [r["id"] for r in cli.json("get", "job", "runs", *J)["runs"]] == [started["id"]]
        logs = cli.json("get", "job", "logs", *J, "--run", started["id"])
        assert [line["log"] for line in logs] == ["job says hi"]
        containers = cli.json("get", "job", "containers", *J)
        assert containers[0]["runId"] == started["id"]
    finally:
        cli.run("delete", "job", *J, "--force")
    assert job_id not in [j["id"] for j in cli.json("list", "jobs", *P)["jobs"]]


def test_exec_into_a_running_job_and_abort_it(cli: Cli, http: httpx.Client) -> None:
    body = {
        "name": unique_name("cli-exec-job"),
        "billing": {"deploymentPlan": "nf-compute-20"},
        "backoffLimit": 0,
        "deployment": {
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "customCommand", "customCommand": "sleep 600"},
        },
    }
    job_id = cli.json("create", "job", "manual", *P, "--input", json.dumps(body))["id"]
    J = (*P, "--job", job_id)
    try:
        run_id = cli.json("start", "job", "run", *J, "--input", "{}")["id"]
        containers = f"/v1/projects/{PROJECT}/jobs/{job_id}/containers"
        deadline = time.monotonic() + 30
        while [c["status"] for c in http.get(containers).json()["data"]["containers"]] != [
            "TASK_RUNNING"
        ]:
            if time.monotonic() > deadline:  # a bound on the wait, not a speed check
                pytest.fail("the job run's container never reached TASK_RUNNING")
            time.sleep(0.05)
        done = cli.run("exec", "job", *J, "--cmd", "echo inside-the-job")
        assert "inside-the-job" in done.stdout
        done = cli.run("abort", "job", "run", *J, "--runId", run_id)
        assert "completed successfully" in done.stdout
        assert cli.json("get", "job", "run", *J, "--runId", run_id)["status"] == "FAILED"
    finally:
        cli.run("delete", "job", *J, "--force")
