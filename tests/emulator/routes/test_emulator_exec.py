"""The exec WebSocket over real sockets and real processes (contract sections 3 and 8)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from emulator_testing import (
    PROJECT,
    Api,
    ExecRun,
    collect,
    eventually,
    exec_path,
    exec_socket,
    init_frame,
    run_exec,
    send,
    unique_name,
    ws_url,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from pytest_northflank.emulator import EmulatorServer

MAX_FRAME_BYTES = 32 * 1024


@pytest.fixture(scope="module")
def service(emulator: EmulatorServer) -> Iterator[dict[str, Any]]:
    """A running service with an environment variable, shared by this module."""
    with Api(emulator) as api:
        started = api.start(
            unique_name("exec"), "sleep infinity", runtimeEnvironment={"GREETING": "hello there"}
        )
        yield started
        api.delete(started["id"])


def run(emulator: EmulatorServer, service: dict[str, Any], **kw: Any) -> ExecRun:
    return run_exec(emulator, service["id"], **kw)


def processes_with(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        alive = process.info["status"] != psutil.STATUS_ZOMBIE
        if alive and text in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def wait_for(ws: ClientConnection, needle: str, seen: list[str]) -> None:
    """Read stdOut frames until ``needle`` has appeared."""
    while needle not in "".join(seen):
        frame = json.loads(ws.recv(timeout=30))
        assert frame["type"] == "stdOut", frame
        seen.append(frame["data"])


# -- one-shot commands -----------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["text-frames", "binary-frames"])
def test_a_one_shot_command(
    emulator: EmulatorServer, service: dict[str, Any], binary: bool
) -> None:
    result = run(emulator, service, command=["echo", "hi"], shell="none", binary=binary,
                 inputs=[{"type": "stdInEnd"}])  # fmt: skip
    assert result.frames[0] == {
        "type": "init",
        "data": {
            "auth": "successful",
            "context": {
                "instanceName": result.frames[0]["data"]["context"]["instanceName"],
                "containerName": service["id"],
            },
        },
    }
    assert result.frames[0]["data"]["context"]["instanceName"].startswith(service["id"] + "-")
    assert result.text() == "hi\n"
    assert result.completion == {
        "exitCode": 0, "status": "Success", "message": "Command exited with code 0"
    }  # fmt: skip
    assert result.close_code == 1000
    assert result.binary_frames == 0  # the server answers in text frames


def test_it_finishes_without_stdinend_when_the_command_reads_no_stdin(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    # The JS one-shot never sends stdInEnd.
    result = run(emulator, service, command=["sh", "-c", "echo out; echo err >&2"], binary=True)
    assert (result.text(), result.text("stdErr")) == ("out\n", "err\n")
    assert result.completion["exitCode"] == 0


def test_a_non_zero_exit(emulator: EmulatorServer, service: dict[str, Any]) -> None:
    result = run(emulator, service, command="sh -c 'exit 7'", shell="none")
    assert result.completion == {
        "exitCode": 7, "status": "Failure", "message": "Command exited with code 7"
    }  # fmt: skip


def test_a_missing_program_is_reported_like_a_shell(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    result = run(emulator, service, command=["no-such-program", "x"])
    assert result.text("stdErr") == "no-such-program: No such file or directory\n"
    assert (result.completion["exitCode"], result.completion["status"]) == (127, "Failure")


@pytest.mark.parametrize(
    ("context", "stdout"),
    [
        ({"command": "echo $GREETING && echo two", "shell": "sh -c"}, "hello there\ntwo\n"),
        ({"command": ["printf", "%s|", "a b", "c"], "shell": "none"}, "a b|c|"),
        ({"command": "printf '%s|' 'a b' c"}, "a b|c|"),
        # An argv with a shell prefix is joined with shell quoting: its words stay words.
        ({"command": ["printf", "%s|", "a b", "$GREETING"], "shell": "bash -c"}, "a b|$GREETING|"),
    ],
)
def test_shell_modes(
    emulator: EmulatorServer, service: dict[str, Any], context: dict[str, Any], stdout: str
) -> None:
    result = run(emulator, service, **context)
    assert (result.text(), result.completion["exitCode"]) == (stdout, 0)


def test_bash_with_a_command_string_reads_it_as_a_script_path_like_the_real_proxy(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    result = run(emulator, service, command="echo 'Hello'", shell="bash")
    assert result.text("stdErr") == "bash: echo 'Hello': No such file or directory\n"
    assert result.completion["exitCode"] == 127


def test_the_sandbox_environment_and_working_directory(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    result = run(emulator, service, command=["sh", "-c", 'echo "$GREETING|$HOME|$(pwd)"'])
    greeting, home, cwd = result.text().strip().split("|")
    assert greeting == "hello there"
    if emulator.isolation == "namespace":
        assert (home, cwd) == ("/root", "/")
    else:
        assert cwd.endswith("/work")


def test_a_background_process_holding_stdout_does_not_hang_the_exec(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    result = run(emulator, service, command=["sh", "-c", "sleep 30 & echo started"])
    assert result.text() == "started\n"
    assert result.completion["exitCode"] == 0
    run(emulator, service, command=["pkill", "-f", "sleep 30"])


# -- stdin -----------------------------------------------------------------------------------------


def test_payloads_are_applied_in_order_and_flushed_before_stdinend(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    pieces = [f"line {n} ✓\n" for n in range(200)]
    inputs = [{"type": "payload", "data": piece} for piece in pieces] + [{"type": "stdInEnd"}]
    result = run(emulator, service, command=["cat"], inputs=inputs, binary=True)
    assert result.text() == "".join(pieces)
    assert result.completion["exitCode"] == 0


def test_base64_both_ways_with_frames_decodable_one_by_one(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    data = os.urandom(300_001)
    sizes = [1, 2, 65536, 7, 100_000, 3]
    chunks, offset = [], 0
    for size in sizes:
        chunks.append(data[offset : offset + size])
        offset += size
    chunks.append(data[offset:])
    inputs = [{"type": "payload", "data": base64.b64encode(c).decode()} for c in chunks]
    result = run(emulator, service, command=["cat"], encoding="base64",
                 inputs=[*inputs, {"type": "stdInEnd"}])  # fmt: skip
    outputs = result.of("stdOut")
    assert all(len(base64.b64decode(part)) <= MAX_FRAME_BYTES for part in outputs)
    assert len(outputs) >= len(data) // MAX_FRAME_BYTES
    assert result.decoded() == data


def test_utf8_output_split_across_reads_stays_whole(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    text = "é✓日本" * 20_000  # far more than one 32 KiB read, multi-byte characters everywhere
    inputs = [{"type": "payload", "data": text}, {"type": "stdInEnd"}]
    result = run(emulator, service, command=["cat"], inputs=inputs)
    assert "\ufffd" not in result.text()
    assert result.text() == text
    # A frame is one read (<= 32 KiB) plus at most 3 bytes of a character cut by the last one.
    assert all(len(part.encode()) <= MAX_FRAME_BYTES + 3 for part in result.of("stdOut"))


def test_an_interactive_shell_without_a_command(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    inputs = [{"type": "payload", "data": "echo $((6 * 7))\n"}, {"type": "stdInEnd"}]
    assert run(emulator, service, shell="none", inputs=inputs).text() == "42\n"
    assert run(emulator, service, shell="sh", inputs=inputs).text() == "42\n"


def test_a_streaming_session_reads_back_before_eof(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    with exec_socket(emulator, service["id"]) as ws:
        send(ws, init_frame(emulator.token, command="cat", tty=False))
        assert json.loads(ws.recv(timeout=30))["type"] == "init"
        seen: list[str] = []
        for word in ("one", "two", "three"):
            send(ws, {"type": "payload", "data": f"{word}\n"})
            wait_for(ws, f"{word}\n", seen)
        send(ws, {"type": "stdInEnd"})
        result = collect(ws)
    assert "".join(seen) == "one\ntwo\nthree\n"
    assert result.completion["exitCode"] == 0


# -- tty -------------------------------------------------------------------------------------------


def test_tty_on_a_real_pty_with_resize(emulator: EmulatorServer, service: dict[str, Any]) -> None:
    with exec_socket(emulator, service["id"]) as ws:
        send(ws, init_frame(emulator.token, command=["sh"], tty=True, ttyRows=30, ttyColumns=100))
        assert json.loads(ws.recv(timeout=30))["type"] == "init"
        seen: list[str] = []
        send(ws, {"type": "payload", "data": "stty size; tty; echo err >&2\n"})
        wait_for(ws, "30 100", seen)
        wait_for(ws, "err", seen)
        send(ws, {"type": "resize", "data": {"ttyRows": 40, "ttyColumns": 120}})
        send(ws, {"type": "payload", "data": "stty size\n"})
        wait_for(ws, "40 120", seen)
        send(ws, {"type": "payload", "data": "exit 3\n"})
        result = collect(ws)
    output = "".join(seen) + result.text()
    assert "/dev/pts/" in output
    assert "\r\n" in output  # the terminal's line discipline
    assert result.of("stdErr") == []  # a terminal has one output stream
    assert result.completion["exitCode"] == 3


# -- the process goes when the client goes ---------------------------------------------------------


def test_a_client_that_leaves_kills_the_command(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    marker = f"{time.monotonic_ns() % 10**9}"
    with exec_socket(emulator, service["id"]) as ws:
        send(ws, init_frame(emulator.token, command=["sh", "-c", f"echo up; sleep 7{marker}"]))
        assert json.loads(ws.recv(timeout=30))["type"] == "init"
        assert json.loads(ws.recv(timeout=30)) == {"type": "stdOut", "data": "up\n"}
        assert processes_with(f"sleep 7{marker}")
    assert eventually(lambda: not processes_with(f"sleep 7{marker}"))


# -- refusals: an error frame (or a failed init), then a close; never a hang -----------------------


def test_a_bad_token_fails_the_init_and_closes(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    result = run(emulator, service, command=["true"], token="wrong", hang_up=False)
    assert result.frames == [
        {"type": "init", "data": {"auth": "failed", "message": "Invalid API token"}}
    ]
    assert result.close_code == 1008  # after giving the client a moment to hang up


def test_a_client_still_sending_after_a_refusal_can_read_it(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    # The Python SDK sends stdInEnd right after init, without waiting for the answer.
    with exec_socket(emulator, service["id"]) as ws:
        send(ws, init_frame("wrong", command=["true"]))
        time.sleep(0.3)  # the server has answered by now, and must not have hung up yet
        send(ws, {"type": "stdInEnd"})
        result = collect(ws)
    assert result.frames[0]["data"]["auth"] == "failed"


@pytest.mark.parametrize(
    ("first", "message"),
    [
        ({"type": "payload", "data": "x"}, "the first frame must be an init frame, got type"),
        ({"type": "init", "data": {}}, "no data.auth object"),
        ({"type": "init", "data": {"auth": {"type": "jwt", "apiToken": "x"}}}, "'jwt'"),
    ],
)
def test_a_bad_first_frame_is_refused(
    emulator: EmulatorServer, service: dict[str, Any], first: dict[str, Any], message: str
) -> None:
    with exec_socket(emulator, service["id"]) as ws:
        send(ws, first)
        result = collect(ws)
    (frame,) = result.frames
    assert message in json.dumps(frame)


def test_null_context_fields_get_an_error_frame(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    result = run(emulator, service, command=["true"], instanceName=None)
    assert result.error == "init context field 'instanceName' must not be null; omit it instead"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"type": "payload", "data": "%%%"}, "payload frame 1 is not valid base64"),
        ({"type": "bogus"}, "unknown frame type 'bogus'"),
        ({"type": "resize", "data": {"ttyRows": "x"}}, "resize frame needs"),
    ],
)
def test_bad_frames_after_init_end_the_command_with_an_error(
    emulator: EmulatorServer, service: dict[str, Any], frame: dict[str, Any], message: str
) -> None:
    result = run(emulator, service, command=["cat"], encoding="base64", inputs=[frame])
    assert message in result.error
    assert result.of("completion") == []


def test_unknown_service_instance_or_container(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    missing = run_exec(emulator, "no-such-service", command=["true"], hang_up=False)
    assert missing.error == f"Service 'no-such-service' not found in project {PROJECT!r}"
    assert missing.close_code == 1000
    wrong_instance = run(emulator, service, command=["true"], instanceName="elsewhere-1")
    assert "Instance 'elsewhere-1' not found" in wrong_instance.error
    wrong_container = run(emulator, service, command=["true"], containerName="sidecar")
    assert "Container 'sidecar' not found" in wrong_container.error
    name = run(emulator, service, command=["true"]).frames[0]["data"]["context"]["instanceName"]
    placed = run(emulator, service, command=["hostname"], instanceName=name,
                 containerName=service["id"])  # fmt: skip
    assert placed.completion["exitCode"] == 0


def test_team_scoped_exec_and_other_resource_kinds(
    emulator: EmulatorServer, service: dict[str, Any]
) -> None:
    with connect(ws_url(emulator, exec_path(service["id"], team="my-team"))) as ws:
        send(ws, init_frame(emulator.token, command=["echo", "team"]))
        assert collect(ws).text() == "team\n"
    with connect(ws_url(emulator, f"/v1/command-exec/projects/{PROJECT}/jobs/j1")) as ws:
        send(ws, init_frame(emulator.token, command=["true"]))
        assert "Job 'j1' not found" in collect(ws).error
    with connect(ws_url(emulator, f"/v1/command-exec/projects/{PROJECT}/addons/a1")) as ws:
        send(ws, init_frame(emulator.token, command=["true"]))
        assert "exec into addons is not available" in collect(ws).error


def test_an_unknown_websocket_path_is_a_404(emulator: EmulatorServer) -> None:
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url(emulator, "/v1/teams/t/command-exec/projects/p/services/s"))
    assert caught.value.response.status_code == 404
    assert json.loads(caught.value.response.body or b"{}")["error"]["status"] == 404


def test_paused_and_not_yet_running_services_are_refused(
    emulator_clean: EmulatorServer,
) -> None:
    with Api(emulator_clean) as api:
        paused = api.start("paused one")
        api.ok("POST", f"/v1/projects/{PROJECT}/services/{paused['id']}/pause")
        result = run_exec(emulator_clean, paused["id"], command=["true"])
        assert result.error.endswith("the service is paused")

        emulator_clean.control.set_ready(delay=60)
        pending = api.create("pending one")
        result = run_exec(emulator_clean, pending["id"], command=["true"])
        assert "no running instance (deployment status PENDING)" in result.error

        emulator_clean.control.set_ready(delay=0)
        dead = api.create("dead one", "sh -c 'exit 4'")
        api.wait_status(dead["id"])
        result = run_exec(emulator_clean, dead["id"], command=["true"])
        assert "deployment status FAILED: The main process exited with code 4" in result.error


# -- faults ----------------------------------------------------------------------------------------


def test_exit_code_as_a_string(emulator_clean: EmulatorServer) -> None:
    emulator_clean.control.exit_code_as_string()
    with Api(emulator_clean) as api:
        started = api.start("stringly")
    result = run_exec(emulator_clean, started["id"], command=["sh", "-c", "exit 42"])
    assert result.completion["exitCode"] == "42"
    assert result.completion["status"] == "Failure"


def test_a_dropped_exec_connection(emulator_clean: EmulatorServer) -> None:
    with Api(emulator_clean) as api:
        started = api.start("dropped")
    emulator_clean.control.drop_next_exec(after_frames=3)
    marker = f"{time.monotonic_ns() % 10**9}"
    script = f"while :; do echo tick; sleep 0.01; done; : 8{marker}"
    result = run_exec(emulator_clean, started["id"], command=["sh", "-c", script])
    assert [f["type"] for f in result.frames] == ["init", "stdOut", "stdOut", "stdOut"]
    assert result.close_code == 1011
    assert eventually(lambda: not processes_with(marker))
    # Only the next one was dropped.
    again = run_exec(emulator_clean, started["id"], command=["echo", "fine"])
    assert again.completion["exitCode"] == 0
    # Dropped right after init: nothing runs at all.
    emulator_clean.control.drop_next_exec(after_frames=0)
    early = run_exec(emulator_clean, started["id"], command=["echo", "never"])
    assert [f["type"] for f in early.frames] == ["init"]
    assert early.close_code == 1011


# -- the container going away ------------------------------------------------------------------


def test_exec_after_the_main_process_ended_is_refused(emulator_clean: EmulatorServer) -> None:
    with Api(emulator_clean) as api:
        started = api.start("ending", "sh -c 'while [ ! -e stop-flag ]; do sleep 0.02; done'")
        path = f"/v1/projects/{PROJECT}/services/{started['id']}/containers"
        run_exec(emulator_clean, started["id"], command=["touch", "stop-flag"])
        assert eventually(lambda: api.ok("GET", path)["containers"][0]["status"] == "TASK_FINISHED")
        assert api.get(started["id"])["status"]["deployment"]["status"] == "COMPLETED"
    result = run_exec(emulator_clean, started["id"], command=["true"])
    assert result.error.endswith("no running instance (its main process has exited)")


def test_deleting_the_service_ends_an_open_exec(emulator_clean: EmulatorServer) -> None:
    with Api(emulator_clean) as api:
        started = api.start("deleted under exec")
        with exec_socket(emulator_clean, started["id"]) as ws:
            send(ws, init_frame(emulator_clean.token, command=["sleep", "600"]))
            assert json.loads(ws.recv(timeout=30))["type"] == "init"
            api.delete(started["id"])
            result = collect(ws)
    assert result.completion["exitCode"] == 137  # SIGKILLed with its sandbox
    assert result.completion["status"] == "Failure"
