"""Helpers for the emulator tests: raw HTTP and WebSocket access, nothing of our client."""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"
RECV_TIMEOUT = 30.0
_counter = itertools.count()


def unique_name(prefix: str = "svc") -> str:
    """A valid service name no other test (or xdist worker) uses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main").replace("_", "-")
    return f"{prefix}-{worker}-{os.getpid()}-{next(_counter)}"[:54]


def service_body(name: str, command: str | None = "sleep infinity", **extra: Any) -> dict[str, Any]:
    docker = (
        {"configType": "default"}
        if command is None
        else {"configType": "customCommand", "customCommand": command}
    )
    body: dict[str, Any] = {
        "name": name,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {
            "instances": 1,
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": docker,
        },
    }
    body.update(extra)
    return body


class Api:
    """Raw REST access to an emulator."""

    def __init__(self, server: EmulatorServer | str, token: str | None = None) -> None:
        """``server``: an EmulatorServer, or a URL (then ``token`` is required)."""
        url = server if isinstance(server, str) else server.url
        token = token or (None if isinstance(server, str) else server.token)
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        response = self.request(method, path, **kw)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def create(self, name: str, command: str | None = "sleep infinity", **extra: Any) -> Any:
        body = service_body(name, command, **extra)
        return self.ok("POST", f"/v1/projects/{PROJECT}/services/deployment", json=body)

    def get(self, service_id: str) -> Any:
        return self.ok("GET", f"/v1/projects/{PROJECT}/services/{service_id}")

    def delete(self, service_id: str) -> None:
        self.ok("DELETE", f"/v1/projects/{PROJECT}/services/{service_id}")

    def wait_status(
        self, service_id: str, until: Iterable[str] = ("COMPLETED", "FAILED"), timeout: float = 30
    ) -> Any:
        wanted = set(until)
        deadline = time.monotonic() + timeout
        while True:
            service = self.get(service_id)
            if service["status"]["deployment"]["status"] in wanted:
                return service
            if time.monotonic() >= deadline:
                pytest.fail(f"still {service['status']} after {timeout}s")
            time.sleep(0.02)

    def start(self, name: str, command: str | None = "sleep infinity", **extra: Any) -> Any:
        created = self.create(name, command, **extra)
        service = self.wait_status(created["id"])
        assert service["status"]["deployment"]["status"] == "COMPLETED", service
        return service


def eventually(
    condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def ws_url(server: EmulatorServer, path: str) -> str:
    return "ws://" + server.url.removeprefix("http://") + path


def exec_path(service_id: str, project: str = PROJECT, team: str | None = None) -> str:
    scope = f"teams/{team}/" if team else ""
    return f"/v1/command-exec/{scope}projects/{project}/services/{service_id}"


def init_frame(token: str, **context: Any) -> dict[str, Any]:
    return {
        "type": "init",
        "data": {"auth": {"type": "apiToken", "apiToken": token}, "context": context},
    }


@dataclass
class ExecRun:
    """What an exec connection received."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    binary_frames: int = 0

    def of(self, kind: str) -> list[Any]:
        return [f.get("data") for f in self.frames if f.get("type") == kind]

    def text(self, kind: str = "stdOut") -> str:
        return "".join(self.of(kind))

    def decoded(self, kind: str = "stdOut") -> bytes:
        return b"".join(base64.b64decode(part) for part in self.of(kind))

    @property
    def completion(self) -> dict[str, Any]:
        completions = self.of("completion")
        assert len(completions) == 1, self.frames
        assert self.frames[-1]["type"] == "completion"
        result: dict[str, Any] = completions[0]
        return result

    @property
    def error(self) -> str:
        errors = self.of("error")
        assert errors, self.frames
        return str(errors[0]["message"])


def send(ws: ClientConnection, frame: dict[str, Any], *, binary: bool = False) -> None:
    text = json.dumps(frame)
    ws.send(text.encode() if binary else text)


def is_refusal(frame: dict[str, Any]) -> bool:
    data = frame.get("data")
    failed_init = frame.get("type") == "init" and isinstance(data, dict)
    return frame.get("type") == "error" or (failed_init and data.get("auth") != "successful")


def collect(ws: ClientConnection, run: ExecRun | None = None, *, hang_up: bool = True) -> ExecRun:
    """Read frames until the server closes. With ``hang_up``, close after a refusal (an
    error frame or a failed init) as the official clients do; otherwise wait for the
    server to close (it gives the client a moment first)."""
    run = run or ExecRun()
    try:
        while True:
            message = ws.recv(timeout=RECV_TIMEOUT)
            if isinstance(message, bytes):
                run.binary_frames += 1
                message = message.decode()
            run.frames.append(json.loads(message))
            if hang_up and is_refusal(run.frames[-1]):
                ws.close()
                return run
    except ConnectionClosed:
        pass
    run.close_code = ws.protocol.close_code
    return run


@contextmanager
def exec_socket(server: EmulatorServer, service_id: str, **kw: Any) -> Iterator[ClientConnection]:
    with connect(ws_url(server, exec_path(service_id, **kw)), max_size=None) as ws:
        yield ws


def run_exec(
    server: EmulatorServer,
    service_id: str,
    *,
    inputs: Iterable[dict[str, Any]] = (),
    binary: bool = False,
    token: str | None = None,
    hang_up: bool = True,
    **context: Any,
) -> ExecRun:
    """One exec: init with ``context``, then ``inputs``; everything the server sent back."""
    with exec_socket(server, service_id) as ws:
        send(ws, init_frame(token or server.token, **context), binary=binary)
        for frame in inputs:
            send(ws, frame, binary=binary)
        return collect(ws, hang_up=hang_up)
