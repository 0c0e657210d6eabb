"""REST behaviour that needs a scripted server: error mapping, retries, adopt-on-ambiguous-create,
pagination, team routes, rate-limit figures and token secrecy. Uses ``httpx.MockTransport``
(the transport seam); everything else is tested against the emulator."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient, Service
from pytest_northflank.errors import (
    ApiError,
    ApiValidationError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    DeploymentFailed,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ReadyTimeout,
    ServerError,
    TransportError,
)

TOKEN = "nf-secret-token-0123456789"
P = "default-project"
Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Replies scripted per ``(method, path)``; the last reply repeats. Records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        replies = self.routes.get((request.method, raw_path(request)))
        if not replies:
            return httpx.Response(404, json={"error": {"status": 404, "message": "no route"}})
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and raw_path(r) == path)


def raw_path(request: httpx.Request) -> str:
    """The path as sent (still percent-encoded), without the query."""
    return request.url.raw_path.decode("ascii").split("?")[0]


def ok(data: Any, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"data": data, **extra})


def err(status: int, message: str = "", headers: dict[str, str] | None = None, **fields: Any):
    return httpx.Response(
        status, json={"error": {"status": status, "message": message, **fields}}, headers=headers
    )


def quota_spent(reset_seconds: int) -> httpx.Response:
    """A 429 for an hourly quota of 1000 with nothing left until it resets."""
    return err(
        429,
        "Too many requests",
        headers={
            "x-ratelimit-limit": "1000",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(reset_seconds),
        },
    )


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(api: FakeApi, sleeps: list[float]) -> Iterator[NorthflankClient]:
    nf = NorthflankClient(TOKEN, base_url="http://nf.test/", transport=httpx.MockTransport(api))
    nf._rest._sleep = sleeps.append  # record backoff instead of sleeping
    yield nf
    nf.close()


SERVICE = {
    "id": "my-sandbox",
    "name": "my sandbox",
    "projectId": P,
    "tags": ["spot-workload"],
    "servicePaused": False,
    "deployment": {"instances": 1, "external": {"imagePath": "ubuntu:22.04"}},
    "billing": {"deploymentPlan": "nf-compute-20"},
    "status": {"deployment": {"status": "PENDING", "reason": "DEPLOYING"}},
    "somethingNew": {"ignored": True},
}
SPEC = DeploymentServiceSpec(name="my sandbox", command="sleep infinity", tags=["spot-workload"])
CREATE = f"/v1/projects/{P}/services/deployment"
LIST = f"/v1/projects/{P}/services"
GET = f"/v1/projects/{P}/services/my-sandbox"


# ------------------------------------------------------------------ envelope and headers


def test_get_reads_the_data_envelope_and_sends_auth(client: NorthflankClient, api: FakeApi) -> None:
    api.on("GET", f"/v1/projects/{P}", ok({"id": P, "name": "Default", "extra": 1}))
    project = client.get_project(P)
    assert (project.id, project.name) == (P, "Default")
    request = api.requests[0]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("pytest-northflank/")
    assert "content-type" not in request.headers
    assert client.base_url == "http://nf.test"


def test_post_sends_json_and_path_segments_are_encoded(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("POST", "/v1/projects/a%2Fb/services/x%20y/scale", ok({}))
    client.scale_service("a/b", "x y", 3)
    request = api.requests[0]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"instances": 3}


def test_empty_and_non_json_success_bodies_are_tolerated(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("POST", f"{GET}/pause", httpx.Response(204))
    api.on("POST", f"{GET}/restart", httpx.Response(200, text="OK"))
    client.pause_service(P, "my-sandbox")
    client.restart_service(P, "my-sandbox")


# ------------------------------------------------------------------ error mapping


@pytest.mark.parametrize(
    ("response", "error_type", "fragments"),
    [
        (
            err(400, "Validation error", details=[{"path": ["name"], "message": "too short"}]),
            ApiValidationError,
            ["Validation error", "name: too short"],
        ),
        (err(422, "Unprocessable"), ApiValidationError, ["Unprocessable"]),
        (err(401, "Unauthorized"), AuthenticationError, ["Unauthorized", "token"]),
        (
            err(403, "Forbidden", details={"permission": "Project > Services > General > Read"}),
            PermissionDeniedError,
            [
                "missing permission: Project > Services > General > Read",
                "Projects, Services and Tags",
            ],
        ),
        (
            err(403, "Missing permission Project > Services > Create"),
            PermissionDeniedError,
            ["Missing permission Project > Services > Create", "Hint"],
        ),
        (err(404, "Service not found"), NotFoundError, ["404 Service not found", "(GET /v1/"]),
        (err(409, "already exists"), ConflictError, ["already exists"]),
        (httpx.Response(404, text="<html>nope</html>"), NotFoundError, ["<html>nope</html>"]),
        (httpx.Response(418, text=""), ApiError, ["418"]),
    ],
)
def test_error_statuses_map_onto_the_error_tree(
    client: NorthflankClient,
    api: FakeApi,
    response: httpx.Response,
    error_type: type[ApiError],
    fragments: list[str],
) -> None:
    api.on("GET", GET, response)
    with pytest.raises(error_type) as info:
        client.get_service(P, "my-sandbox")
    assert type(info.value) is error_type
    for fragment in fragments:
        assert fragment in str(info.value)
    assert api.count("GET", GET) == 1  # 4xx is never retried


def test_error_keeps_id_and_details(client: NorthflankClient, api: FakeApi) -> None:
    api.on("GET", GET, err(400, "bad", id="err-1", details={"field": "x"}))
    with pytest.raises(ApiValidationError) as info:
        client.get_service(P, "my-sandbox")
    assert info.value.error_id == "err-1"
    assert info.value.details == {"field": "x"}
    assert info.value.status == 400


# ------------------------------------------------------------------ retries


def test_idempotent_get_retries_5xx_and_transport_errors(
    client: NorthflankClient, api: FakeApi, sleeps: list[float]
) -> None:
    api.on(
        "GET",
        GET,
        err(503, "busy"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        ok(SERVICE),
    )
    assert client.get_service(P, "my-sandbox").id == "my-sandbox"
    assert client.request_count == 4
    assert len(sleeps) == 3
    # Exponential backoff with full jitter: each wait is within its growing cap.
    assert all(0 <= s <= 0.5 * 2**i for i, s in enumerate(sleeps))


def test_restart_is_never_sent_twice_when_the_server_may_have_acted(
    client: NorthflankClient, api: FakeApi
) -> None:
    restart = GET + "/restart"
    api.on("POST", restart, err(502, "bad gateway"), ok({}))
    with pytest.raises(ServerError, match="bad gateway"):
        client.restart_service(P, "my-sandbox")
    api.on("POST", restart, httpx.ReadTimeout("the answer was lost"), ok({}))
    with pytest.raises(TransportError, match="ReadTimeout"):
        client.restart_service(P, "my-sandbox")
    assert api.count("POST", restart) == 2  # once each


def test_restart_is_resent_when_the_server_cannot_have_acted(
    client: NorthflankClient, api: FakeApi, sleeps: list[float]
) -> None:
    restart = GET + "/restart"
    api.on("POST", restart, httpx.ConnectError("refused"), quota_spent(2), ok({}))
    client.restart_service(P, "my-sandbox")
    assert api.count("POST", restart) == 3
    assert sleeps[-1] == pytest.approx(2, abs=1)  # waited for the quota's reset


def test_retries_are_bounded(client: NorthflankClient, api: FakeApi) -> None:
    api.on("GET", GET, err(500, "down"))
    with pytest.raises(ServerError, match="down"):
        client.get_service(P, "my-sandbox")
    assert api.count("GET", GET) == 5  # max_retries=4


def test_transport_error_after_retries_names_the_request(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("GET", GET, httpx.ConnectError("connection refused"))
    with pytest.raises(TransportError, match=r"GET http://nf.test/v1/projects/.*ConnectError"):
        client.get_service(P, "my-sandbox")


def test_delete_is_retried_and_404_means_already_gone(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("DELETE", GET, err(502, "bad gateway"), ok({}))
    assert client.delete_service(P, "my-sandbox") is True
    assert api.requests[-1].url.params["delete_child_objects"] == "true"
    api.on("DELETE", GET, err(404, "gone"))
    assert client.delete_service(P, "my-sandbox") is False


def test_429_waits_for_the_quota_reset_when_spent(
    client: NorthflankClient, api: FakeApi, sleeps: list[float]
) -> None:
    api.on("GET", GET, quota_spent(reset_seconds=7), ok(SERVICE))
    client.get_service(P, "my-sandbox")
    assert len(sleeps) == 1
    assert 7 <= sleeps[0] <= 8


def test_429_honours_retry_after_too(
    client: NorthflankClient, api: FakeApi, sleeps: list[float]
) -> None:
    api.on("GET", GET, err(429, "slow down", headers={"retry-after": "4"}), ok(SERVICE))
    client.get_service(P, "my-sandbox")
    assert len(sleeps) == 1
    assert 4 <= sleeps[0] <= 5


def test_429_with_a_long_reset_raises_at_once_with_reset_after(
    client: NorthflankClient, api: FakeApi, sleeps: list[float]
) -> None:
    api.on("GET", GET, quota_spent(reset_seconds=1800))
    with pytest.raises(RateLimitedError) as info:
        client.get_service(P, "my-sandbox")
    assert info.value.reset_after == 1800
    assert "resets in 1800s" in str(info.value)
    assert sleeps == []
    assert api.count("GET", GET) == 1


def test_rate_limit_figures_are_readable(client: NorthflankClient, api: FakeApi) -> None:
    assert client.rate_limit is None
    api.on(
        "GET",
        GET,
        httpx.Response(
            200,
            json={"data": SERVICE},
            headers={
                "x-ratelimit-limit": "1000",
                "x-ratelimit-remaining": "998",
                "x-ratelimit-reset": "3500",
            },
        ),
    )
    client.get_service(P, "my-sandbox")
    figures = client.rate_limit
    assert figures is not None
    assert (figures.limit, figures.remaining, figures.reset_after) == (1000, 998, 3500)
    assert figures.resets_at is not None


# ------------------------------------------------------------------ create: never blindly resent


def listing(*services: dict[str, Any]) -> httpx.Response:
    return ok(
        {"services": list(services)}, pagination={"hasNextPage": False, "count": len(services)}
    )


def test_create_success_sends_one_post(client: NorthflankClient, api: FakeApi) -> None:
    api.on("POST", CREATE, ok(SERVICE))
    service = client.create_deployment_service(P, SPEC)
    assert service.id == "my-sandbox"
    assert api.count("POST", CREATE) == 1
    body = json.loads(api.requests[0].content)
    assert body["deployment"]["docker"] == {
        "configType": "customCommand",
        "customCommand": "sleep infinity",
    }
    assert body["tags"] == ["spot-workload"]


def test_ambiguous_create_adopts_the_service_it_finds(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("POST", CREATE, httpx.ReadTimeout("timed out after sending"))
    api.on("GET", LIST, listing({"id": "other", "name": "other"}, SERVICE))
    api.on("GET", GET, ok(SERVICE))
    service = client.create_deployment_service(P, SPEC)
    assert service.id == "my-sandbox"
    assert api.count("POST", CREATE) == 1  # not resent


def test_ambiguous_5xx_with_nothing_created_is_retried_once(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("POST", CREATE, err(502, "bad gateway"), ok(SERVICE))
    api.on("GET", LIST, listing())
    assert client.create_deployment_service(P, SPEC).id == "my-sandbox"
    assert api.count("POST", CREATE) == 2


def test_409_after_an_ambiguous_first_try_adopts(client: NorthflankClient, api: FakeApi) -> None:
    api.on("POST", CREATE, httpx.RemoteProtocolError("connection dropped"), err(409, "exists"))
    # The first lookup races the server's commit and misses; the 409 proves it exists.
    api.on("GET", LIST, listing(), listing(SERVICE))
    api.on("GET", GET, ok(SERVICE))
    assert client.create_deployment_service(P, SPEC).id == "my-sandbox"
    assert api.count("POST", CREATE) == 2


def test_409_on_the_first_try_is_a_real_conflict(client: NorthflankClient, api: FakeApi) -> None:
    api.on("POST", CREATE, err(409, "A service with that name already exists"))
    with pytest.raises(ConflictError, match="already exists"):
        client.create_deployment_service(P, SPEC)
    assert api.count("GET", LIST) == 0


def test_create_that_never_connected_is_resent_without_lookup(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("POST", CREATE, httpx.ConnectError("refused"), ok(SERVICE))
    assert client.create_deployment_service(P, SPEC).id == "my-sandbox"
    assert api.count("GET", LIST) == 0
    assert api.count("POST", CREATE) == 2


def test_create_waits_out_a_429(
    client: NorthflankClient, api: FakeApi, sleeps: list[float]
) -> None:
    limited = err(
        429, "slow down", headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"}
    )
    api.on("POST", CREATE, limited, ok(SERVICE))
    assert client.create_deployment_service(P, SPEC).id == "my-sandbox"
    assert len(sleeps) == 1


def test_create_ambiguous_twice_and_absent_raises_the_failure(
    client: NorthflankClient, api: FakeApi
) -> None:
    api.on("POST", CREATE, err(500, "internal"))
    api.on("GET", LIST, listing())
    with pytest.raises(ServerError, match="internal"):
        client.create_deployment_service(P, SPEC)
    assert api.count("POST", CREATE) == 2


def test_create_validation_error_is_not_retried(client: NorthflankClient, api: FakeApi) -> None:
    api.on(
        "POST", CREATE, err(400, "Validation error", details=[{"path": ["name"], "message": "bad"}])
    )
    with pytest.raises(ApiValidationError, match="name: bad"):
        client.create_deployment_service(P, SPEC)
    assert api.count("POST", CREATE) == 1


# ------------------------------------------------------------------ pagination


def test_pagination_follows_cursors(client: NorthflankClient, api: FakeApi) -> None:
    pages = {
        None: ok({"services": [{"id": "a"}]}, pagination={"hasNextPage": True, "cursor": "c1"}),
        "c1": ok({"services": [{"id": "b"}]}, pagination={"hasNextPage": True, "cursor": "c2"}),
        "c2": ok({"services": [{"id": "c"}]}, pagination={"hasNextPage": False, "count": 1}),
    }
    api.on("GET", LIST, lambda request: pages[request.url.params.get("cursor")])
    assert [s.id for s in client.list_services(P)] == ["a", "b", "c"]
    assert all(r.url.params["per_page"] == "100" for r in api.requests)


@pytest.mark.parametrize(
    "pagination",
    [
        {"hasNextPage": True, "cursor": None},  # the JS client loops forever on this
        {"hasNextPage": True},
        {"hasNextPage": False, "cursor": "more"},
        None,
    ],
)
def test_pagination_stops(
    client: NorthflankClient, api: FakeApi, pagination: dict[str, Any] | None
) -> None:
    extra = {} if pagination is None else {"pagination": pagination}
    api.on("GET", LIST, ok({"services": [{"id": "a"}]}, **extra))
    assert [s.id for s in client.list_services(P)] == ["a"]
    assert api.count("GET", LIST) == 1


def test_pagination_refuses_a_repeating_cursor(client: NorthflankClient, api: FakeApi) -> None:
    api.on("GET", LIST, ok({"services": []}, pagination={"hasNextPage": True, "cursor": "same"}))
    with pytest.raises(ApiError, match="twice"):
        client.list_services(P)


# ------------------------------------------------------------------ team routes


def test_team_scoped_routes(api: FakeApi) -> None:
    with NorthflankClient(
        TOKEN, base_url="http://nf.test", team_id="team-1", transport=httpx.MockTransport(api)
    ) as nf:
        api.on("GET", "/v1/teams/team-1/projects", ok({"projects": [{"id": P}]}))
        api.on(
            "GET",
            "/v1/teams/team-1/tags",
            ok({"tags": [{"id": "t", "name": "spot", "useSpotNodes": True}]}),
        )
        api.on("GET", f"/v1/teams/team-1/projects/{P}/services/s", ok(SERVICE))
        assert [p.id for p in nf.list_projects()] == [P]
        assert nf.list_tags()[0].use_spot_nodes is True
        nf.get_service(P, "s")
        assert (
            nf._exec.exec_path(P, "s") == f"/v1/command-exec/teams/team-1/projects/{P}/services/s"
        )


def test_plain_exec_path() -> None:
    with NorthflankClient(TOKEN, base_url="https://api.example") as nf:
        assert nf._exec.exec_path(P, "s") == f"/v1/command-exec/projects/{P}/services/s"
        assert nf._exec.ws_base == "wss://api.example"


# ------------------------------------------------------------------ readiness polling


def test_wait_for_service_ready(client: NorthflankClient, api: FakeApi) -> None:
    def status(value: str) -> httpx.Response:
        return ok({**SERVICE, "status": {"deployment": {"status": value}}})

    api.on("GET", GET, status("PENDING"), status("IN_PROGRESS"), status("COMPLETED"))
    service = client.wait_for_service_ready(P, "my-sandbox", poll_interval=0.01)
    assert service.ready
    assert api.count("GET", GET) == 3

    api.on(
        "GET", GET, ok({**SERVICE, "status": {"deployment": {"status": "FAILED", "reason": "OOM"}}})
    )
    with pytest.raises(DeploymentFailed, match="OOM"):
        client.wait_for_service_ready(P, "my-sandbox", poll_interval=0.01)

    api.on("GET", GET, status("PENDING"))
    with pytest.raises(ReadyTimeout, match="PENDING"):
        client.wait_for_service_ready(P, "my-sandbox", timeout=0.05, poll_interval=0.01)


# ------------------------------------------------------------------ models


def test_service_model_is_lenient() -> None:
    service = Service.model_validate(SERVICE)
    assert service.deployment_status == "PENDING"
    assert service.image == "ubuntu:22.04"
    assert service.plan == "nf-compute-20"
    assert service.paused is False
    assert service.raw["somethingNew"] == {"ignored": True}
    # servicePaused missing: instances == 0 means paused.
    paused = Service.model_validate({"id": "x", "deployment": {"instances": 0}})
    assert paused.paused is True
    assert paused.deployment_status is None
    odd = Service.model_validate({"id": "x", "status": {"deployment": {"status": "WEIRD"}}})
    assert odd.deployment_status is None


def test_spec_payload_has_no_nulls_and_validates_names() -> None:
    payload = DeploymentServiceSpec(name="abc").to_payload()
    assert payload == {
        "name": "abc",
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {
            "instances": 1,
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "default"},
        },
    }
    assert "null" not in json.dumps(payload)
    full = DeploymentServiceSpec(
        name="abc", env={"A": "1"}, description="d", expiry_time=3600, tags=["t-1"]
    ).to_payload()
    assert full["runtimeEnvironment"] == {"A": "1"}
    assert full["createOptions"] == {"expiryTime": 3600}
    for bad in ("ab", "1abc", "a--b", "a-", "x" * 55):
        with pytest.raises(ConfigError, match=r"invalid deployment service spec: name: service"):
            DeploymentServiceSpec(name=bad)
    with pytest.raises(ConfigError, match="tags: tag name 'bad tag' is invalid"):
        DeploymentServiceSpec(name="abc", tags=["bad tag"])
    with pytest.raises(ConfigError, match="instances: Input should be a valid integer"):
        DeploymentServiceSpec(name="abc", instances="many")
    with pytest.raises(ConfigError, match="colour: Extra inputs are not permitted"):
        DeploymentServiceSpec(name="abc", colour="red")


def test_bad_construction_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="token"):
        NorthflankClient("")
    with pytest.raises(ConfigError, match="http"):
        NorthflankClient(TOKEN, base_url="ftp://x")
    with pytest.raises(ConfigError, match="team_id"):
        NorthflankClient(TOKEN, team_id=" ")


# ------------------------------------------------------------------ the token stays secret


def test_token_never_appears_in_reprs_errors_or_logs(
    client: NorthflankClient, api: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(client._rest)
    assert TOKEN not in repr(client._exec)
    # A server echoing the Authorization header back must not put the token in our message.
    api.on(
        "GET",
        GET,
        lambda request: err(401, f"bad header {request.headers['authorization']}"),
    )
    with pytest.raises(AuthenticationError) as info:
        client.get_service(P, "my-sandbox")
    assert TOKEN not in str(info.value)
    assert "***" in str(info.value)
    api.on("GET", GET, httpx.ConnectError(f"failed with {TOKEN}"))
    with pytest.raises(TransportError) as transport_info:
        client.get_service(P, "my-sandbox")
    assert TOKEN not in str(transport_info.value)
    assert TOKEN not in caplog.text
    assert "GET /v1/projects" in caplog.text  # the log does record requests
