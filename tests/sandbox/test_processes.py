"""Background processes, streamed output and waits over a real emulator, both isolation modes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from pytest_northflank.errors import NorthflankError, ProcessEnded, WaitTimeout
from pytest_northflank.sandbox import Sandbox

SERVER = (
    "python3 -u -c 'import http.server as h, sys\n"
    "class H(h.SimpleHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    '        self.send_response(200 if self.path == "/health" else 404); self.end_headers()\n'
    '    def log_message(self, *a): print("request", self.path, flush=True)\n'
    's = h.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)\n'
    'print("listening on", s.server_port, flush=True); s.serve_forever()\' {port}'
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_http_server_found_by_line_port_and_http(sandbox: Sandbox) -> None:
    port = free_port()
    with sandbox.start("sleep 0.3; " + SERVER.format(port=port)) as server:
        match = server.wait_for_line(r"listening on (\d+)", timeout=30)
        assert match.group(1) == str(port)
        sandbox.wait_for_port(port, timeout=30)
        sandbox.wait_for_http(port, "/health", timeout=30)
        assert server.exit_code is None
        assert server.running
        server.wait_for_line(r"request /health")
    assert not server.running
    assert server.exit_code is None or server.exit_code != 0


def test_wait_for_line_times_out_fast_with_output(sandbox: Sandbox) -> None:
    with sandbox.start("echo starting; echo warming >&2; sleep 60") as process:
        with pytest.raises(WaitTimeout) as caught:
            process.wait_for_line("ready", timeout=0.5)
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, NorthflankError)
        text = str(caught.value)
        assert "'ready'" in text
        assert "starting" in text
        assert "warming" in text
        assert process.running


def test_process_that_exits_early_fails_the_wait_at_once(sandbox: Sandbox) -> None:
    process = sandbox.start("echo boom >&2; exit 3")
    with pytest.raises(ProcessEnded) as caught:
        process.wait_for_line("never", timeout=60)
    assert caught.value.exit_code == 3
    assert "exited 3" in str(caught.value)
    assert "boom" in str(caught.value)
    result = process.wait(timeout=10)
    assert result.exit_code == 3
    assert result.stderr == "boom\n"


def test_stdin_and_lines(sandbox: Sandbox) -> None:
    process = sandbox.start(["sh", "-c", 'while read -r line; do echo "got $line"; done; echo bye'])
    process.write("one\ntwo\n")
    assert process.wait_for_line("got two", timeout=30).group(0) == "got two"
    process.write(b"three\n")
    process.close_stdin()
    assert list(process.lines()) == ["got one", "got two", "got three", "bye"]
    assert process.wait(timeout=10).exit_code == 0
    assert process.stdout == "got one\ngot two\ngot three\nbye\n"


def test_env_cwd_and_exit_code(sandbox: Sandbox) -> None:
    process = sandbox.start('echo "$GREETING from $(pwd)"; exit 7', env={"GREETING": "hi"}, cwd="/")
    result = process.wait(timeout=30)
    assert (result.exit_code, result.stdout, process.exit_code) == (7, "hi from /\n", 7)
    assert process.stderr == ""  # the PID line of the wrapper is not output


def test_wait_timeout_leaves_the_process_running(sandbox: Sandbox) -> None:
    with sandbox.start("sleep 60") as process:
        with pytest.raises(WaitTimeout):
            process.wait(timeout=0.2)
        assert process.running


def test_terminate_stops_the_whole_group(sandbox: Sandbox) -> None:
    process = sandbox.start("sleep 1000 & sleep 1001 & echo started; wait")
    process.wait_for_line("started", timeout=30)
    process.terminate()
    result = process.wait(timeout=30)
    assert result.exit_code is not None
    assert result.exit_code != 0
    left = sandbox.run("ps -eo args | grep -c '^sleep 100[01]' || true").stdout.strip()
    deadline = time.monotonic() + 10
    while left != "0" and time.monotonic() < deadline:
        time.sleep(0.1)
        left = sandbox.run("ps -eo args | grep -c '^sleep 100[01]' || true").stdout.strip()
    assert left == "0"


def test_kill(sandbox: Sandbox) -> None:
    process = sandbox.start("trap '' TERM; echo up; sleep 1000")
    process.wait_for_line("up", timeout=30)
    process.kill()
    process.wait(timeout=30)
    assert not process.running


def test_on_output_gets_the_first_chunk_long_before_the_end(sandbox: Sandbox) -> None:
    chunks: list[tuple[str, str]] = []
    first_seen = threading.Event()

    def on_output(stream: str, text: str) -> None:
        chunks.append((stream, text))
        first_seen.set()

    finished = threading.Event()
    result_box = []

    def run() -> None:
        result_box.append(
            sandbox.run(
                "echo first; echo err >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo last",
                on_output=on_output,
            )
        )
        finished.set()

    runner = threading.Thread(target=run)
    runner.start()
    assert first_seen.wait(30)
    assert not finished.is_set()  # the command is still waiting for /tmp/go
    sandbox.run("touch /tmp/go", check=True)
    runner.join(30)
    result = result_box[0]
    assert result.stdout == "first\nlast\n"
    assert result.stderr == "err\n"
    assert "".join(t for s, t in chunks if s == "stdout") == "first\nlast\n"
    assert "".join(t for s, t in chunks if s == "stderr") == "err\n"


def test_wait_for_port_and_http_time_out_naming_what(sandbox: Sandbox) -> None:
    port = free_port()
    with pytest.raises(WaitTimeout, match=f"port {port}.*nothing listening"):
        sandbox.wait_for_port(port, timeout=0.3)
    with pytest.raises(WaitTimeout, match=f"http://127.0.0.1:{port}/x.*no answer"):
        sandbox.wait_for_http(port, "/x", timeout=0.3)
    with sandbox.start(SERVER.format(port=port)) as server:
        server.wait_for_line("listening")
        with pytest.raises(WaitTimeout, match="last seen: status 404"):
            sandbox.wait_for_http(port, "/missing", timeout=0.3)


def test_waits_work_without_curl_nc_or_python(sandbox: Sandbox) -> None:
    """Only sh and bash on PATH for the probes: they still find the server."""
    port = free_port()
    sandbox.run(
        'mkdir -p /tmp/bare && ln -sf "$(command -v sh)" /tmp/bare/sh && '
        'ln -sf "$(command -v bash)" /tmp/bare/bash',
        check=True,
    )
    with sandbox.start(SERVER.format(port=port)) as server:
        server.wait_for_line("listening")
        original = sandbox._client.run

        def bare_run(project_id, service_id, argv, **kw):  # type: ignore[no-untyped-def]
            argv = ["env", "PATH=/tmp/bare", *argv]
            return original(project_id, service_id, argv, **kw)

        sandbox._client.run = bare_run  # type: ignore[method-assign]
        try:
            assert sandbox.run(["sh", "-c", "command -v curl python3 nc wget"]).exit_code != 0
            sandbox.wait_for_port(port, timeout=30)
            sandbox.wait_for_http(port, "/health", timeout=30)
        finally:
            del sandbox._client.run  # type: ignore[method-assign]


def test_teardown_stops_processes_still_running(new_sandbox: Callable[[], Sandbox]) -> None:
    made = new_sandbox()
    stubborn = made.start("trap '' TERM; echo up; sleep 1000")
    polite = made.start("echo up; sleep 1000")
    stubborn.wait_for_line("up")
    polite.wait_for_line("up")
    made.stop_processes(grace=0.5)
    assert not stubborn.running
    assert not polite.running
    made.delete()
