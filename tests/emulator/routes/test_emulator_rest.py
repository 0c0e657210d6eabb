"""The emulator's REST API over real sockets: envelope, errors, auth, rate limit, resources."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import psutil
import pytest
from emulator_testing import PROJECT, Api, service_body, unique_name

from pytest_northflank.emulator import EmulatorServer

SERVICES = f"/v1/projects/{PROJECT}/services"


def error_of(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    error: dict[str, object] = body["error"]
    return error


# -- envelope, auth, errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API token"),
        ({"Authorization": "Bearer wrong-token"}, "Invalid API token"),
        ({"Authorization": "Basic abc"}, "Malformed Authorization header"),
        ({"Authorization": "Bearer"}, "Malformed Authorization header"),
    ],
)
def test_the_api_needs_the_bearer_token(
    emulator_clean: EmulatorServer, headers: dict[str, str], message: str
) -> None:
    for path in ("/v1/projects", "/_emulator/state", "/v1/no/such/route"):
        response = httpx.get(emulator_clean.url + path, headers=headers)
        error = error_of(response, 401)
        assert str(error["message"]).startswith(message)
        assert emulator_clean.token not in response.text


def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    assert "no route GET /v1/nothing" in str(
        error_of(api.request("GET", "/v1/nothing"), 404)["message"]
    )
    error_of(api.request("GET", "/elsewhere"), 404)
    error_of(api.request("PUT", "/v1/projects"), 405)
    error_of(api.request("GET", "/v1/projects/"), 404)  # no redirects to a slash-less path


def test_bad_json_bodies_are_400s_that_say_so(api: Api) -> None:
    response = api.request(
        "POST", f"{SERVICES}/deployment", content=b"{not json",
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert "Request body is not valid JSON" in str(error_of(response, 400)["message"])
    response = api.request("POST", f"{SERVICES}/deployment")
    assert "Request body is required" in str(error_of(response, 400)["message"])
    response = api.request("POST", f"{SERVICES}/deployment", json=[1, 2])
    assert "must be an object" in str(error_of(response, 400)["message"])


def test_success_is_200_with_the_data_envelope(api: Api) -> None:
    response = api.request("GET", "/v1/projects")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"data", "pagination"}


def test_rate_limit_headers_on_every_api_answer_and_429_past_the_quota(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.set_rate_limit(3)
    remaining = []
    for path in ("/v1/projects", "/v1/tags", "/v1/missing"):
        response = api.request("GET", path)
        assert response.headers["x-ratelimit-limit"] == "3"
        assert 0 < int(response.headers["x-ratelimit-reset"]) <= 3600
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    over = api.request("GET", "/v1/projects")
    error = error_of(over, 429)
    assert "Rate limit exceeded: 3 requests per hour" in str(error["message"])
    assert over.headers["x-ratelimit-remaining"] == "0"
    # The control plane is not the API: it stays usable.
    assert emulator_clean.control.state()["rateLimit"]["used"] == 3
    emulator_clean.control.set_rate_limit(None)
    assert api.request("GET", "/v1/projects").headers["x-ratelimit-limit"] == "1000000"


def test_a_short_rate_limit_window_runs_out_and_comes_back(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.set_rate_limit(2, window_seconds=1.0)
    assert [api.request("GET", "/v1/projects").status_code for _ in range(3)] == [200, 200, 429]
    refused = api.request("GET", "/v1/projects")
    error_of(refused, 429)
    assert refused.headers["x-ratelimit-reset"] == "1"
    rate = emulator_clean.control.state()["rateLimit"]
    assert (rate["used"], rate["totalUsed"], rate["refused"], rate["windowSeconds"]) == (
        2, 2, 2, 1.0,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while api.request("GET", "/v1/projects").status_code == 429:
        if time.monotonic() >= deadline:
            pytest.fail("the window never reset")
        time.sleep(0.2)
    rate = emulator_clean.control.state()["rateLimit"]
    assert (rate["used"], rate["totalUsed"]) == (1, 3)
    assert rate["refused"] >= 2


def test_team_scoped_routes_answer_the_same(api: Api) -> None:
    plain = api.ok("GET", "/v1/projects")
    assert api.ok("GET", "/v1/teams/my-team/projects") == plain
    created = api.ok(
        "POST", f"/v1/teams/my-team/projects/{PROJECT}/services/deployment",
        json=service_body("team svc"),
    )  # fmt: skip
    assert api.ok("GET", f"/v1/teams/t/projects/{PROJECT}/services/team-svc")["id"] == created["id"]


# -- projects ---------------------------------------------------------------------------------


def test_projects_list_get_and_byoc_style_create_failure(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    listed = api.ok("GET", "/v1/projects")
    assert listed == {"projects": [{"id": PROJECT, "name": PROJECT}]}
    api.create("in project")
    project = api.ok("GET", f"/v1/projects/{PROJECT}")
    assert project["id"] == PROJECT
    assert [s["id"] for s in project["services"]] == ["in-project"]
    assert {"createdAt", "deployment", "jobs", "addons"} <= set(project)
    error_of(api.request("GET", "/v1/projects/nope"), 404)

    created = api.ok("POST", "/v1/projects", json={"name": "Second Project"})
    assert created["id"] == "second-project"
    assert api.request("POST", "/v1/projects", json={"name": "Second Project"}).status_code == 409

    emulator_clean.control.set_project_creation_error()
    refused = api.request("POST", "/v1/projects", json={"name": "Third Project"})
    assert error_of(refused, 400)["message"] == "Region not found"


def test_other_seeded_projects() -> None:
    with (
        EmulatorServer(project_ids=("alpha", "beta"), isolation="directory") as server,
        Api(server) as api,
    ):
        ids = [p["id"] for p in api.ok("GET", "/v1/projects")["projects"]]
        assert ids == ["alpha", "beta"]
        error_of(api.request("GET", "/v1/projects/default-project"), 404)


# -- tags ---------------------------------------------------------------------------------------


def test_tags_create_list_get_update_delete(api: Api) -> None:
    tag = api.ok("POST", "/v1/tags", json={"name": "spot-workload", "useSpotNodes": True})
    assert (tag["id"], tag["useSpotNodes"], tag["useOnDemandNodes"]) == (
        "spot-workload",
        True,
        False,
    )
    assert api.request("POST", "/v1/tags", json={"name": "spot-workload"}).status_code == 409
    assert api.ok("GET", "/v1/tags")["tags"] == [tag]
    assert api.ok("GET", "/v1/tags/spot-workload") == tag
    patched = api.ok("PATCH", "/v1/tags/spot-workload", json={"useOnDemandNodes": True})
    assert patched["useOnDemandNodes"] is True
    put = api.ok("PUT", "/v1/tags", json={"name": "other", "color": "#112233"})
    assert put["color"] == "#112233"
    api.ok("DELETE", "/v1/tags/other")
    error_of(api.request("GET", "/v1/tags/other"), 404)
    bad = api.request("POST", "/v1/tags", json={"name": "spot", "useSpotNodes": "yes"})
    assert error_of(bad, 400)["details"] == [
        {"path": ["useSpotNodes"], "message": "must be a boolean, got string"}
    ]


# -- services: create ---------------------------------------------------------------------------


def test_create_answers_pending_with_the_service(api: Api) -> None:
    created = api.create("Example Service", description="hello", tags=[])
    assert created["id"] == "example-service"
    assert created["name"] == "Example Service"
    assert created["appId"] == f"/emulator/{PROJECT}/example-service"
    assert created["status"]["deployment"]["status"] == "PENDING"
    assert created["status"]["deployment"]["reason"] == "DEPLOYING"
    assert created["deployment"]["external"]["imagePath"] == "ubuntu:22.04"
    assert created["deployment"]["instances"] == 1
    assert created["billing"] == {"deploymentPlan": "nf-compute-20"}
    assert created["servicePaused"] is False
    assert created["serviceType"] == "deployment"
    assert {"cluster", "ports", "tags", "createdAt", "lastTransitionTime"} <= set(created)


def test_validation_errors_carry_details(api: Api) -> None:
    body = service_body("ok name")
    body["deployment"]["instances"] = "1"
    response = api.request("POST", f"{SERVICES}/deployment", json=body)
    error = error_of(response, 400)
    assert error["details"] == [
        {"path": ["deployment", "instances"], "message": "must be an integer, got string"}
    ]
    assert "deployment.instances: must be an integer" in str(error["message"])


def test_a_duplicate_name_is_409(api: Api) -> None:
    api.create("twice")
    again = api.request("POST", f"{SERVICES}/deployment", json=service_body("Twice"))
    assert "already exists" in str(error_of(again, 409)["message"])
    assert len(api.ok("GET", SERVICES)["services"]) == 1


def test_unknown_project_is_404(api: Api) -> None:
    response = api.request(
        "POST", "/v1/projects/nope/services/deployment", json=service_body("x1y")
    )
    assert "Project 'nope' not found" in str(error_of(response, 404)["message"])


def test_services_must_name_existing_tags(api: Api) -> None:
    body = service_body("tagged", tags=["t1"])
    response = api.request("POST", f"{SERVICES}/deployment", json=body)
    error = error_of(response, 400)
    assert "Tag 't1' not found" in str(error["message"])
    assert error["details"] == [{"path": ["tags"], "message": "unknown tag 't1'"}]
    api.ok("POST", "/v1/tags", json={"name": "t1"})
    assert api.create("tagged", tags=["t1"])["tags"] == ["t1"]


def test_a_spot_only_cluster_rejects_workloads_without_a_spot_tag(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.set_spot_only()
    api.ok("POST", "/v1/tags", json={"name": "plain"})
    api.ok("POST", "/v1/tags", json={"name": "spot-workload", "useSpotNodes": True})
    for tags in ([], ["plain"]):
        body = service_body("spotty", tags=tags)
        response = api.request("POST", f"{SERVICES}/deployment", json=body)
        assert error_of(response, 400)["message"] == (
            "Workload is not tagged as spot, but cluster has only spot nodes configured"
        )
    created = api.create("spotty", tags=["plain", "spot-workload"])
    assert api.wait_status(created["id"])["status"]["deployment"]["status"] == "COMPLETED"


# -- services: status -------------------------------------------------------------------------


def test_ready_delay_zero_is_completed_on_the_first_get(api: Api) -> None:
    created = api.create("quick")
    service = api.get(created["id"])
    assert service["status"]["deployment"]["status"] == "COMPLETED"
    assert service["status"]["deployment"]["reason"] == "DEPLOYING"


def test_a_ready_delay_goes_pending_then_in_progress_then_completed(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.set_ready(delay=0.6)
    created = api.create("slow")
    seen = [api.get(created["id"])["status"]["deployment"]["status"]]
    while seen[-1] != "COMPLETED":
        time.sleep(0.05)
        seen.append(api.get(created["id"])["status"]["deployment"]["status"])
    order = [s for n, s in enumerate(seen) if n == 0 or seen[n - 1] != s]
    assert order == ["PENDING", "IN_PROGRESS", "COMPLETED"]


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("sh -c 'exit 3'", "exited with code 3"),
        ("exit 3", "exit: No such file or directory"),
        ("/no/such/binary --flag", "/no/such/binary: No such file or directory"),
        ("true", "exited with code 0"),
    ],
)
def test_a_main_command_that_dies_at_start_fails_the_deployment(
    api: Api, command: str, reason: str
) -> None:
    created = api.create(unique_name("dies"), command)
    service = api.wait_status(created["id"])
    deployment = service["status"]["deployment"]
    assert deployment["status"] == "FAILED"
    assert reason in deployment["message"]


def test_failing_readiness_fault(api: Api, emulator_clean: EmulatorServer) -> None:
    emulator_clean.control.set_ready(fail=True)
    created = api.create("unready")
    service = api.wait_status(created["id"])
    assert service["status"]["deployment"]["status"] == "FAILED"
    assert "Readiness check failed" in service["status"]["deployment"]["message"]


# -- services: list, delete ---------------------------------------------------------------------


def test_list_pages_through_services_by_cursor(api: Api) -> None:
    for n in range(7):
        api.create(f"listed {n}", command=None, deployment={"instances": 0,
                   "external": {"imagePath": "ubuntu:22.04"}})  # fmt: skip
    seen: list[str] = []
    params: dict[str, str] = {"per_page": "3"}
    while True:
        response = api.request("GET", SERVICES, params=params)
        body = response.json()
        seen += [s["id"] for s in body["data"]["services"]]
        if "cursor" not in body["pagination"]:
            assert body["pagination"]["hasNextPage"] is False
            break
        assert re.fullmatch(r"[A-Za-z0-9_-]+", body["pagination"]["cursor"])
        params = {"per_page": "3", "cursor": body["pagination"]["cursor"]}
    assert seen == [f"listed-{n}" for n in range(7)]
    summary = api.ok("GET", SERVICES, params={"per_page": "1"})["services"][0]
    assert {"id", "appId", "name", "tags", "serviceType", "status", "projectId"} <= set(summary)


def test_delete_kills_every_process_and_frees_the_disk(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    created = api.start("doomed", "sh -c 'sleep 1000 & sleep infinity'")
    (container,) = emulator_clean.runtime.containers()
    main = psutil.Process(container.pid)
    family = [main, *main.children(recursive=True)]
    assert any("1000" in " ".join(p.cmdline()) for p in family)
    directory = Path(container.directory)
    assert directory.exists()

    assert (
        api.ok("DELETE", f"{SERVICES}/{created['id']}", params={"delete_child_objects": "true"})
        == {}
    )
    assert emulator_clean.runtime.containers() == []
    assert not directory.exists()
    _, alive = psutil.wait_procs(family, timeout=5)
    assert alive == []
    error_of(api.request("GET", f"{SERVICES}/{created['id']}"), 404)
    error_of(api.request("DELETE", f"{SERVICES}/{created['id']}"), 404)


# -- pause, resume, restart, scale, containers --------------------------------------------------


def test_pause_then_resume(api: Api, emulator_clean: EmulatorServer) -> None:
    created = api.start("pausable")
    path = f"{SERVICES}/{created['id']}"
    assert api.ok("POST", f"{path}/pause", headers={"content-type": "application/json"}) == {}
    paused = api.get(created["id"])
    assert paused["servicePaused"] is True
    assert paused["deployment"]["instances"] == 0
    assert emulator_clean.runtime.containers() == []
    assert api.ok("GET", f"{path}/containers") == {"containers": []}
    error_of(api.request("POST", f"{path}/pause"), 409)
    error_of(api.request("POST", f"{path}/restart"), 409)

    assert api.ok("POST", f"{path}/resume", json={}) == {}
    resumed = api.wait_status(created["id"])
    assert resumed["status"]["deployment"] == {
        **resumed["status"]["deployment"], "status": "COMPLETED", "reason": "SCALING"
    }  # fmt: skip
    assert (resumed["servicePaused"], resumed["deployment"]["instances"]) == (False, 1)
    assert len(emulator_clean.runtime.containers()) == 1
    error_of(api.request("POST", f"{path}/resume"), 409)


def test_restart_replaces_the_container(api: Api) -> None:
    created = api.start("restarted", "sh -c 'echo started; sleep infinity'")
    path = f"{SERVICES}/{created['id']}"
    (before,) = api.ok("GET", f"{path}/containers")["containers"]
    assert before["status"] == "TASK_RUNNING"
    assert api.ok("POST", f"{path}/restart") == {}
    api.wait_status(created["id"])
    (after,) = api.ok("GET", f"{path}/containers")["containers"]
    assert after["name"] != before["name"]
    assert after["name"].startswith("restarted-")
    assert isinstance(after["createdAt"], int)
    logs = api.ok("GET", f"{path}/logs", params={"direction": "forward"})
    assert [(line["containerId"], line["log"]) for line in logs] == [
        (before["name"], "started"),
        (after["name"], "started"),
    ]


def test_scale_to_zero_and_back(api: Api, emulator_clean: EmulatorServer) -> None:
    created = api.start("scaled")
    path = f"{SERVICES}/{created['id']}"
    assert api.ok("POST", f"{path}/scale", json={"instances": 0}) == {}
    service = api.get(created["id"])
    assert (service["deployment"]["instances"], service["servicePaused"]) == (0, False)
    assert emulator_clean.runtime.containers() == []
    api.ok("POST", f"{path}/scale", json={"instances": 1, "deploymentPlan": "nf-compute-50"})
    service = api.wait_status(created["id"])
    assert service["billing"]["deploymentPlan"] == "nf-compute-50"
    assert service["status"]["deployment"]["status"] == "COMPLETED"
    error_of(api.request("POST", f"{path}/scale", json={"instances": 5}), 400)
