"""Service logs over real sockets: REST range and the WebSocket tail (contract section 5)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from emulator_testing import PROJECT, Api, init_frame, run_exec, send, ws_url
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import ClientConnection, connect

from pytest_northflank.emulator import EmulatorServer

# Prints three lines, then one more each time poke-flag appears.
CHATTY = (
    "sh -c 'echo first; echo second; echo third; "
    'while :; do if [ -e poke-flag ]; then rm poke-flag; echo "poked $(date +%N)"; fi; '
    "sleep 0.02; done'"
)


def logs_path(service_id: str) -> str:
    return f"/v1/projects/{PROJECT}/services/{service_id}/logs"


def fetch(api: Api, service_id: str, **params: Any) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = api.ok("GET", logs_path(service_id), params=params)
    return lines


def wait_lines(api: Api, service_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while len(lines := fetch(api, service_id, direction="forward")) < count:
        if time.monotonic() >= deadline:
            pytest.fail(lines)
        time.sleep(0.02)
    return lines


def test_range_fetch_returns_the_main_process_output(api: Api) -> None:
    service = api.start("chatty", CHATTY)
    lines = wait_lines(api, service["id"], 3)
    assert [line["log"] for line in lines] == ["first", "second", "third"]
    instance = api.ok("GET", f"{logs_path(service['id'])[:-5]}/containers")["containers"][0]
    assert {line["containerId"] for line in lines} == {instance["name"]}
    stamps = [datetime.fromisoformat(line["ts"].replace("Z", "+00:00")) for line in lines]
    assert stamps == sorted(stamps)
    assert all(line["ts"].endswith("Z") for line in lines)

    # The PY SDK's defaults: newest first.
    newest_first = fetch(api, service["id"], queryType="range", type="runtime", lineLimit=200,
                         direction="backward", duration=600)  # fmt: skip
    assert [line["log"] for line in newest_first] == ["third", "second", "first"]
    assert [line["log"] for line in fetch(api, service["id"], lineLimit=2)] == ["third", "second"]
    assert [line["log"] for line in fetch(api, service["id"], textIncludes="ir")] == [
        "third",
        "first",
    ]
    assert [line["log"] for line in fetch(api, service["id"], regexNotIncludes="^(f|t)")] == [
        "second"
    ]
    later = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    assert fetch(api, service["id"], startTime=later) == []
    assert fetch(api, service["id"], type="ingress") == []
    assert fetch(api, service["id"], containerName="other") == []


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"lineLimit": "0"}, "lineLimit"),
        ({"direction": "sideways"}, "direction"),
        ({"type": "kernel"}, "type"),
        ({"regexIncludes": "("}, "regexIncludes"),
        ({"startTime": "yesterday"}, "startTime"),
        ({"queryType": "tail"}, "queryType"),
        ({"duration": "-5"}, "duration"),
    ],
)
def test_bad_log_queries_are_400s_naming_the_parameter(
    api: Api, params: dict[str, str], name: str
) -> None:
    service = api.create("quiet", "sleep infinity")
    response = api.request("GET", logs_path(service["id"]), params=params)
    assert response.status_code == 400
    assert f"Invalid query parameter {name}" in response.json()["error"]["message"]


def test_unknown_service_logs_are_404(api: Api) -> None:
    assert api.request("GET", logs_path("nothing-here")).status_code == 404


def open_tail(server: EmulatorServer, service_id: str, query: str = "") -> ClientConnection:
    url = ws_url(server, f"{logs_path(service_id)}?queryType=tail{query}")
    return connect(url)


def next_lines(ws: ClientConnection) -> list[str]:
    frame = json.loads(ws.recv(timeout=30))
    assert frame["type"] == "log-lines", frame
    return [line["log"] for line in frame["data"]]


def drain(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=30)


def test_stderr_lines_are_logged_too(api: Api) -> None:
    service = api.start("stderr", "sh -c 'echo to-stderr >&2; sleep infinity'")
    (line,) = wait_lines(api, service["id"], 1)
    assert line["log"] == "to-stderr"


def test_the_tail_sends_the_backlog_then_live_lines(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    service = api.start("tailed", CHATTY)
    wait_lines(api, service["id"], 3)
    with open_tail(emulator_clean, service["id"], "&lineLimit=2") as ws:
        auth = {"type": "apiToken", "apiToken": emulator_clean.token}
        send(ws, {"type": "init", "data": {"auth": auth}})  # no context in a tail's init
        assert json.loads(ws.recv(timeout=30)) == {"type": "init", "data": {"auth": "successful"}}
        assert next_lines(ws) == ["second", "third"]
        for _ in range(2):
            run_exec(emulator_clean, service["id"], command=["touch", "poke-flag"])
            (line,) = next_lines(ws)
            assert line.startswith("poked ")
        # A deleted service ends the tail with a normal close.
        api.delete(service["id"])
        with pytest.raises(ConnectionClosedOK):
            drain(ws)
        assert ws.protocol.close_code == 1000


def test_the_tail_follows_a_restart_and_filters(api: Api, emulator_clean: EmulatorServer) -> None:
    service = api.start("restarting", "sh -c 'echo boot; echo noise; sleep infinity'")
    wait_lines(api, service["id"], 2)
    with open_tail(emulator_clean, service["id"], "&textIncludes=boot") as ws:
        send(ws, init_frame(emulator_clean.token))
        assert json.loads(ws.recv(timeout=30))["type"] == "init"
        assert next_lines(ws) == ["boot"]
        api.ok("POST", f"/v1/projects/{PROJECT}/services/{service['id']}/restart")
        assert next_lines(ws) == ["boot"]


def test_the_tail_needs_the_token_in_its_first_frame(
    api: Api, emulator_clean: EmulatorServer
) -> None:
    service = api.create("secret logs")
    with open_tail(emulator_clean, service["id"]) as ws:
        send(ws, {"type": "init", "data": {"auth": {"type": "apiToken", "apiToken": "nope"}}})
        assert json.loads(ws.recv(timeout=30)) == {
            "type": "init",
            "data": {"auth": "failed", "message": "Invalid API token"},
        }
        with pytest.raises(Exception, match="1008"):
            ws.recv(timeout=30)


def test_a_tail_of_an_unknown_service_is_an_error_frame(emulator_clean: EmulatorServer) -> None:
    with open_tail(emulator_clean, "ghost") as ws:
        send(ws, init_frame(emulator_clean.token))
        assert json.loads(ws.recv(timeout=30))["type"] == "init"
        frame = json.loads(ws.recv(timeout=30))
        assert frame == {
            "type": "error",
            "data": {"message": f"Service 'ghost' not found in project {PROJECT!r}"},
        }
