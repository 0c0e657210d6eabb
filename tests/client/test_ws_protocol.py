"""Exec and log-tail protocol edge cases against a scripted WebSocket server on loopback.

The emulator speaks the protocol correctly; these servers misbehave on purpose (string exit
codes, binary frames, stalls, drops, refusals) to pin down how the client reacts.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from pytest_northflank.client import ExecResult, LogLine, NorthflankClient, exec_session
from pytest_northflank.client import exec as exec_module
from pytest_northflank.errors import (
    AuthenticationError,
    CommandTimeout,
    ExecError,
    NotFoundError,
    TransportError,
)

TOKEN = "ws-secret-token-abcdef"
P, S = "proj", "svc"
Scenario = Callable[[ServerConnection, dict[str, Any]], None]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(ws: ServerConnection, frame: dict[str, Any], *, binary: bool = False) -> None:
    text = json.dumps(frame)
    ws.send(text.encode() if binary else text)


def init_ok(ws: ServerConnection, **kw: Any) -> None:
    send(
        ws,
        {"type": "init", "data": {"auth": "successful", "context": {"instanceName": "pod-0"}}},
        **kw,
    )


def complete(ws: ServerConnection, code: Any = 0, **kw: Any) -> None:
    status = "Success" if code in (0, "0") else "Failure"
    send(ws, {"type": "completion", "data": {"exitCode": code, "status": status}}, **kw)
    ws.close(1000)


def read_stdin(ws: ServerConnection) -> tuple[bytes, list[dict[str, Any]]]:
    """Collect payload frames until stdInEnd; also return every other frame seen."""
    data = b""
    others = []
    for raw in ws:
        frame = json.loads(raw)
        if frame["type"] == "payload":
            data += base64.b64decode(frame["data"])
        elif frame["type"] == "stdInEnd":
            return data, others
        else:
            others.append(frame)
    return data, others


def answer_true(ws: ServerConnection, init: dict[str, Any]) -> None:
    init_ok(ws)
    complete(ws)


_SERVER_LOGGER = logging.getLogger("tests.scripted_ws_server")
_SERVER_LOGGER.setLevel(logging.INFO)


class ScriptedServer:
    def __init__(self) -> None:
        self.scenario: Scenario = answer_true
        self.inits: list[dict[str, Any]] = []
        self.connections = 0
        self.stall_handshakes = 0
        self.reject_with: tuple[int, bytes] | None = None
        self.disconnected = threading.Event()
        self.errors: list[BaseException] = []
        self._server: Server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            logger=_SERVER_LOGGER,  # the fake server's own frame logs are not the client's
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.connections += 1
        if self.stall_handshakes > 0:
            self.stall_handshakes -= 1
            time.sleep(0.6)  # past the client's open timeout
            return None
        if self.reject_with is not None:
            status, body = self.reject_with
            self.reject_with = None
            return Response(status, HTTPStatus(status).phrase, Headers(), body)
        return None

    def _handle(self, ws: ServerConnection) -> None:
        try:
            init = json.loads(ws.recv())
            self.inits.append(init)
            self.scenario(ws, init)
        except ConnectionClosed:
            pass
        except BaseException as exc:  # surfaced by the test through server.errors
            self.errors.append(exc)
        finally:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                ws.recv(timeout=5)
            self.disconnected.set()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()
    assert not scripted.errors, scripted.errors


@pytest.fixture
def client(server: ScriptedServer) -> Iterator[NorthflankClient]:
    with NorthflankClient(
        TOKEN, base_url=f"http://127.0.0.1:{server.port}", ws_open_timeout=0.3
    ) as nf:
        yield nf


# ------------------------------------------------------------------ one-shot runs


def test_init_context_is_argv_base64_and_never_null(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws)
        read_stdin(ws)
        complete(ws)

    server.scenario = scenario
    client.run(P, S, "echo hi | wc -c")
    client.run(P, S, ["printf", "%s", "a b"])
    client.run(P, S, "ls -l /tmp", shell="none")
    client.run(P, S, "echo $0", shell="bash -c")
    contexts = [init["data"]["context"] for init in server.inits]
    assert [c["command"] for c in contexts] == [
        ["sh", "-c", "echo hi | wc -c"],
        ["printf", "%s", "a b"],
        ["ls", "-l", "/tmp"],
        ["bash", "-c", "echo $0"],
    ]
    for context in contexts:
        assert context["shell"] == "none"
        assert context["encoding"] == "base64"
        assert context["tty"] is False
        assert None not in context.values()
    assert server.inits[0]["data"]["auth"] == {"type": "apiToken", "apiToken": TOKEN}


def test_stdin_and_binary_output_round_trip_with_string_exit_code(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws, binary=True)
        data, _ = read_stdin(ws)
        # Echo back in odd-sized pieces, as binary frames, with a string exit code.
        for i in range(0, len(data), 1000):
            send(ws, {"type": "stdOut", "data": b64(data[i : i + 1000])}, binary=True)
        send(ws, {"type": "stdErr", "data": b64(b"\x00\xffwarn")})
        complete(ws, "3")

    server.scenario = scenario
    payload = bytes(range(256)) * 3000  # 768000 bytes: several frames, fed on a thread
    result = client.run(P, S, ["cat"], input=payload)
    assert result.stdout == payload
    assert result.stderr == b"\x00\xffwarn"
    assert result.exit_code == 3
    assert result.status == "Failure"
    assert not result.ok
    assert result.stdout_text.startswith("\x00\x01")


def test_payload_frames_are_multiples_of_three_bytes(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    sizes: list[int] = []

    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws)
        for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "stdInEnd":
                break
            sizes.append(len(base64.b64decode(frame["data"])))
        complete(ws)

    server.scenario = scenario
    client.run(P, S, ["cat"], input=b"x" * (exec_session.FRAME_BYTES * 2 + 5))
    assert sizes == [exec_session.FRAME_BYTES, exec_session.FRAME_BYTES, 5]
    assert exec_session.FRAME_BYTES % 3 == 0


def test_missing_exit_code_falls_back_on_status(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws)
        send(ws, {"type": "completion", "data": {"status": "Success"}})
        ws.close()

    server.scenario = scenario
    assert client.run(P, S, "true").exit_code == 0


@pytest.mark.parametrize(
    ("behaviour", "match"),
    [
        ("close", r"closed \(code 1000\) before the command reported completion"),
        ("drop", "broke"),
        ("error", "the server reported an error: no such container"),
        ("refuse", r"refused the exec init \(auth failed\): invalid token"),
        ("unknown", "unknown frame type 'keepalive'"),
        ("no-init", "expected an init frame first"),
    ],
)
def test_protocol_failures_raise_exec_error(
    client: NorthflankClient, server: ScriptedServer, behaviour: str, match: str
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        if behaviour == "refuse":
            send(ws, {"type": "init", "data": {"auth": "failed", "message": "invalid token"}})
            return
        if behaviour == "no-init":
            send(ws, {"type": "stdOut", "data": b64(b"x")})
            return
        init_ok(ws)
        send(ws, {"type": "stdOut", "data": b64(b"partial")})
        if behaviour == "close":
            ws.close(1000)
        elif behaviour == "drop":
            ws.socket.close()
        elif behaviour == "error":
            send(ws, {"type": "error", "data": {"message": "no such container"}})
        elif behaviour == "unknown":
            send(ws, {"type": "keepalive"})

    server.scenario = scenario
    with pytest.raises(ExecError, match=match) as info:
        client.run(P, S, "echo hi")
    assert TOKEN not in str(info.value)


def test_error_frame_echoing_the_token_is_scrubbed(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        send(ws, {"type": "error", "data": {"message": f"bad token {TOKEN}"}})

    server.scenario = scenario
    with pytest.raises(ExecError) as info:
        client.run(P, S, "true")
    assert TOKEN not in str(info.value)


# ------------------------------------------------------------------ handshake


def test_stalled_handshake_is_retried_and_init_sent_once(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    server.stall_handshakes = 1
    assert client.run(P, S, "true").ok
    assert server.connections == 2
    assert len(server.inits) == 1


def test_handshake_gives_up_after_three_attempts(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    server.stall_handshakes = 3
    with pytest.raises(TransportError, match="after 3 attempts"):
        client.run(P, S, "true")
    assert server.inits == []


def test_rejected_upgrade_maps_onto_the_error_tree(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    server.reject_with = (404, b'{"error":{"status":404,"message":"Service not found"}}')
    with pytest.raises(NotFoundError, match="Service not found"):
        client.run(P, S, "true")
    server.reject_with = (503, b"busy")
    assert client.run(P, S, "true").ok  # a 503 at the edge is retried


# ------------------------------------------------------------------ timeouts


def test_timeout_wraps_the_command_and_a_remote_timeout_raises(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws)
        send(ws, {"type": "stdOut", "data": b64(b"so far")})
        time.sleep(0.3)
        complete(ws, 124)  # what coreutils timeout exits with

    server.scenario = scenario
    with pytest.raises(CommandTimeout, match=r"timed out after 0\.2s") as info:
        client.run(P, S, "sleep 100", timeout=0.2)
    assert info.value.timeout == 0.2
    assert "6 bytes of stdout" in str(info.value)
    partial = info.value.result
    assert isinstance(partial, ExecResult)
    assert (partial.stdout, partial.stderr, partial.exit_code) == (b"so far", b"", 124)
    assert server.inits[0]["data"]["context"]["command"] == [
        "timeout",
        "-k",
        "2",
        "0.2",
        "sh",
        "-c",
        "sleep 100",
    ]


def test_exit_124_before_the_timeout_is_just_an_exit_code(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    server.scenario = lambda ws, init: (init_ok(ws), complete(ws, 124))  # type: ignore[func-returns-value]
    assert client.run(P, S, ["sh", "-c", "exit 124"], timeout=30).exit_code == 124


def test_client_stops_waiting_and_closes_when_the_remote_side_hangs(
    client: NorthflankClient, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exec_module, "TIMEOUT_GRACE", 0.1)

    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws)
        send(ws, {"type": "stdOut", "data": b64(b"abc")})
        ws.recv(timeout=30)  # hangs until the client goes away

    server.scenario = scenario
    with pytest.raises(CommandTimeout, match="3 bytes of stdout") as info:
        client.run(P, S, "sleep 100", timeout=0.1)
    assert server.disconnected.wait(5)
    # No completion ever came: the output so far, and no exit code to report.
    partial = info.value.result
    assert isinstance(partial, ExecResult)
    assert (partial.stdout, partial.stderr) == (b"abc", b"")
    assert (partial.exit_code, partial.status, partial.ok) == (-1, "Timeout", False)


# ------------------------------------------------------------------ sessions


def test_session_streams_output_writes_stdin_resizes_and_waits(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    seen: list[dict[str, Any]] = []

    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws)
        for raw in ws:
            frame = json.loads(raw)
            seen.append(frame)
            if frame["type"] == "payload":
                send(ws, {"type": "stdOut", "data": frame["data"]})
            if frame["type"] == "stdInEnd":
                send(ws, {"type": "stdErr", "data": b64(b"bye")})
                complete(ws, 0)
                return

    server.scenario = scenario
    with client.open_session(P, S, "cat", tty=True, rows=30, columns=100) as session:
        assert session.info.instance_name == "pod-0"
        session.write(b"hello\n")
        first = next(iter(session))
        assert (first.stream, first.data, first.text) == ("stdout", b"hello\n", "hello\n")
        session.resize(40, 120)
        session.write("é")
        assert session.read(timeout=5).data == "é".encode()  # type: ignore[union-attr]
        session.close_stdin()
        session.close_stdin()  # idempotent
        result = session.wait(timeout=5)
    assert result.ok
    assert result.stderr == b"bye"
    assert [f["type"] for f in seen] == ["payload", "resize", "payload", "stdInEnd"]
    assert seen[1]["data"] == {"ttyRows": 40, "ttyColumns": 120}
    context = server.inits[0]["data"]["context"]
    assert (context["tty"], context["ttyRows"], context["ttyColumns"]) == (True, 30, 100)
    with pytest.raises(ExecError, match="already"):
        session.write(b"late")


def test_session_wait_timeout_closes_the_connection(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        init_ok(ws)
        send(ws, {"type": "stdErr", "data": b64(b"warming up")})
        ws.recv(timeout=30)

    server.scenario = scenario
    with (
        client.open_session(P, S, ["sleep", "100"]) as session,
        pytest.raises(CommandTimeout) as info,
    ):
        session.wait(timeout=0.2)
    assert server.disconnected.wait(5)
    assert info.value.result.stderr == b"warming up"


def test_session_open_fails_cleanly_when_init_is_refused(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    server.scenario = lambda ws, init: send(
        ws, {"type": "init", "data": {"auth": "nope", "message": "expired"}}
    )
    with pytest.raises(ExecError, match="expired"):
        client.open_session(P, S, "sh")


# ------------------------------------------------------------------ log tail


@pytest.mark.parametrize(
    ("ending", "outcome"),
    [("normal", None), ("abnormal", TransportError), ("error", TransportError)],
)
def test_log_tail_frames_and_endings(
    client: NorthflankClient,
    server: ScriptedServer,
    ending: str,
    outcome: type[Exception] | None,
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        assert init == {"type": "init", "data": {"auth": {"type": "apiToken", "apiToken": TOKEN}}}
        send(ws, {"type": "init", "data": {"auth": "successful"}})
        send(
            ws,
            {
                "type": "log-lines",
                "data": [
                    {"containerId": "c", "log": "one", "ts": "2024-05-01T10:00:00Z"},
                    {"containerId": "c", "log": "two", "ts": "2024-05-01T10:00:01.5Z"},
                ],
            },
        )
        if ending == "normal":
            ws.close(1000)
        elif ending == "abnormal":
            ws.close(1011, "internal")
        else:
            send(ws, {"type": "error", "data": {"message": "tail exploded"}})

    server.scenario = scenario
    lines: list[LogLine] = []
    with client.tail_logs(P, S, line_limit=10) as tail:
        if outcome is None:
            lines = list(tail)
        else:
            lines = [next(tail), next(tail)]
            with pytest.raises(outcome):
                next(tail)
    assert [line.log for line in lines] == ["one", "two"]
    assert lines[1].ts is not None
    assert lines[1].ts.microsecond == 500000


def test_log_tail_refused_init_is_an_authentication_error(
    client: NorthflankClient, server: ScriptedServer
) -> None:
    server.scenario = lambda ws, init: send(
        ws, {"type": "init", "data": {"auth": "failed", "message": "bad token"}}
    )
    with pytest.raises(AuthenticationError, match="bad token"):
        client.tail_logs(P, S)


def test_token_never_reaches_the_logs_even_at_debug(
    client: NorthflankClient, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    def scenario(ws: ServerConnection, init: dict[str, Any]) -> None:
        if "context" in init["data"]:
            answer_true(ws, init)
        else:  # a log tail
            send(ws, {"type": "init", "data": {"auth": "successful"}})
            ws.close(1000)

    server.scenario = scenario
    caplog.set_level(logging.DEBUG)  # root logger at DEBUG: every library's records captured
    client.run(P, S, "true")
    with client.tail_logs(P, S, recv_timeout=0.2) as tail:
        list(tail)
    assert server.inits[0]["data"]["auth"]["apiToken"] == TOKEN  # it was sent...
    # ...and never logged, not even the truncated frame dumps websockets writes at DEBUG.
    assert TOKEN[-10:] not in caplog.text
    assert TOKEN[:10] not in caplog.text
