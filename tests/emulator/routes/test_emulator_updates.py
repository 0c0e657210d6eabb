"""Service updates on the emulator: PATCH, PUT, deployment, runtime environment, ports,
health checks, and the catalogue/login routes."""

from __future__ import annotations

from emulator_testing import PROJECT, Api, run_exec, service_body, unique_name

from pytest_northflank.emulator import EmulatorServer

SERVICES = f"/v1/projects/{PROJECT}/services"


def main_pid(api: Api, service_id: str) -> int:
    services = api.ok("GET", "/_emulator/state")["services"]
    return int(next(s for s in services if s["id"] == service_id)["instance"]["pid"])


def test_patching_the_environment_rolls_the_container(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    service = api.start(unique_name("svc"), runtimeEnvironment={"COLOR": "red"})["id"]
    before = main_pid(api, service)
    patched = api.ok(
        "PATCH", f"{SERVICES}/deployment/{service}", json={"runtimeEnvironment": {"COLOR": "blue"}}
    )
    assert patched["status"]["deployment"]["status"] == "PENDING"
    assert api.wait_status(service)["status"]["deployment"]["status"] == "COMPLETED"
    assert main_pid(api, service) != before
    run = run_exec(emulator_clean, service, command=["sh", "-c", 'printf %s "$COLOR"'])
    assert run.text() == "blue"


def test_patching_the_command_and_description(api: Api) -> None:
    service = api.start(unique_name("svc"))["id"]
    before = main_pid(api, service)
    body = {
        "description": "patched",
        "deployment": {
            "instances": 1,
            "docker": {"configType": "customCommand", "customCommand": "sleep 1000"},
        },
    }
    patched = api.ok("PATCH", f"{SERVICES}/deployment/{service}", json=body)
    assert patched["description"] == "patched"
    assert patched["deployment"]["docker"]["customCommand"] == "sleep 1000"
    api.wait_status(service)
    dumped = next(s for s in api.ok("GET", "/_emulator/state")["services"] if s["id"] == service)
    assert dumped["argv"] == ["sleep", "1000"]
    assert main_pid(api, service) != before


def test_patch_refusals(api: Api) -> None:
    service = api.start(unique_name("svc"))["id"]
    for body, where in [
        ({"name": "other"}, "name"),
        ({"deployment": {"external": {"imagePath": "ubuntu:22.04"}}}, "deployment.instances"),
        ({"ports": [{"name": "toolongname", "internalPort": 80, "protocol": "HTTP"}]},
         "ports.0.name"),
        ({"ports": [{"name": "db", "internalPort": 5432, "protocol": "TCP", "public": True}]},
         "ports.0.public"),
        ({"billing": {"deploymentPlan": "nf-nope"}}, "billing.deploymentPlan"),
    ]:  # fmt: skip
        response = api.request("PATCH", f"{SERVICES}/deployment/{service}", json=body)
        assert response.status_code == 400, body
        assert where in {".".join(d["path"]) for d in response.json()["error"]["details"]}
    assert api.request("PATCH", f"{SERVICES}/deployment/nope", json={}).status_code == 404


def test_runtime_environment_post_replaces_and_restarts(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    service = api.start(unique_name("svc"), runtimeEnvironment={"A": "1"})["id"]
    path = f"{SERVICES}/{service}/runtime-environment"
    answer = api.ok("POST", path, json={"runtimeEnvironment": {"B": "2"}})
    assert answer == {"success": True, "restartSuccessful": True}
    assert api.ok("GET", path) == {"runtimeEnvironment": {"B": "2"}, "runtimeFiles": {}}
    api.wait_status(service)
    run = run_exec(emulator_clean, service, command=["sh", "-c", 'printf %s "${A}-${B}"'])
    assert run.text() == "-2"


def test_ports_replace_keep_ids_and_show_in_the_service(api: Api) -> None:
    service = api.start(unique_name("svc"))["id"]
    path = f"{SERVICES}/{service}/ports"
    body = {"ports": [{"name": "web", "internalPort": 8080, "protocol": "HTTP", "public": True,
                       "domains": ["example.com"]}]}  # fmt: skip
    assert api.ok("POST", path, json=body) == {}
    ports = api.ok("GET", path)["ports"]
    assert ports[0]["id"] == "web"
    assert ports[0]["domains"] == [{"name": "example.com", "certificate": {"inProgress": False}}]
    again = {"ports": [{"id": "web", "name": "http", "internalPort": 8081, "protocol": "HTTP"}]}
    api.ok("POST", path, json=again)
    assert [(p["id"], p["name"]) for p in api.ok("GET", path)["ports"]] == [("web", "http")]
    assert api.get(service)["ports"][0]["internalPort"] == 8081
    dup = {"ports": [{"name": "a", "internalPort": 1, "protocol": "TCP"},
                     {"name": "a", "internalPort": 2, "protocol": "TCP"}]}  # fmt: skip
    assert api.request("POST", path, json=dup).status_code == 400


def test_put_upserts_and_deployment_post_changes_the_command(api: Api) -> None:
    name = unique_name("svc")
    first = api.ok("PUT", f"{SERVICES}/deployment", json=service_body(name))
    api.wait_status(first["id"])
    second = api.ok("PUT", f"{SERVICES}/deployment", json=service_body(name, "sleep 99"))
    assert second["deployment"]["docker"]["customCommand"] == "sleep 99"
    deployment = {"docker": {"configType": "customCommand", "customCommand": "sleep 77"}}
    assert api.ok("POST", f"{SERVICES}/{name}/deployment", json=deployment) == {}
    got = api.ok("GET", f"{SERVICES}/{name}/deployment")
    assert got["docker"]["customCommand"] == "sleep 77"
    assert api.wait_status(name)["status"]["deployment"]["status"] == "COMPLETED"


def test_health_checks_round_trip(api: Api) -> None:
    service = api.start(unique_name("svc"))["id"]
    path = f"{SERVICES}/{service}/health-checks"
    check = {"protocol": "HTTP", "type": "readinessProbe", "path": "/healthz", "port": 8080,
             "initialDelaySeconds": 1, "periodSeconds": 10, "timeoutSeconds": 1,
             "failureThreshold": 3}  # fmt: skip
    assert api.ok("POST", path, json={"healthChecks": [check]}) == {}
    shown = api.ok("GET", path)["healthChecks"][0]
    assert shown["httpPort"] == 8080
    assert "port" not in shown
    bad = {"healthChecks": [{**check, "protocol": "CMD", "periodSeconds": 1}]}
    response = api.request("POST", path, json=bad)
    paths = {".".join(d["path"]) for d in response.json()["error"]["details"]}
    assert {"healthChecks.0.periodSeconds", "healthChecks.0.cmd"} <= paths


def test_login_auth_plans_and_regions(api: Api, emulator_clean: EmulatorServer) -> None:
    assert api.ok("GET", "/v1/login")["tokenKind"] == "api"
    assert api.ok("GET", "/v1/auth")["entityType"] == "team"
    assert emulator_clean.token not in api.request("GET", "/v1/auth").text
    plans = {p["id"]: p for p in api.ok("GET", "/v1/plans")["plans"]}
    assert plans["nf-compute-20"]["cpuResource"] == 0.2
    assert plans["nf-compute-200-8"]["ramResource"] == 8192
    assert api.ok("GET", "/v1/regions")["regions"][0]["id"]
    wrong = Api(emulator_clean.url, token="wrong")
    try:
        assert wrong.request("GET", "/v1/login").status_code == 401
    finally:
        wrong.close()
