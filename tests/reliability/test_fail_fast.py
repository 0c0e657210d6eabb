"""A wrong configuration fails once, early, with a hint: an unreachable API, a wrong project or
token stop the run before any test (pytest's usage error), a fatal answer met later trips a
breaker, and absurd option values get the usual option error. Whole pytest runs in
subprocesses against real sockets (the emulator, a port nobody listens on, a tiny server that
refuses every token)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from reliability_helpers import PROJECT, output, run_pytest, services_left

from pytest_northflank.emulator import EmulatorServer

TWELVE_SANDBOX_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(12))
def test_box(nf_sandbox, n):
    assert nf_sandbox.run("true").ok
"""


def requests_seen(server: EmulatorServer) -> int:
    """API requests the emulator answered with anything but 401 since its last reset."""
    return int(server.control.state()["rateLimit"]["used"])


def free_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes (other than this one) whose command line or environment holds
    ``text``: what a run left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in seen:
            found.append(int(entry.name))
    return found


class RefusingApi(BaseHTTPRequestHandler):
    """Answers every request 401, as Northflank does for a wrong token; counts them."""

    count = 0

    def do_GET(self) -> None:
        type(self).count += 1
        body = json.dumps({"error": {"status": 401, "message": "Unauthorized"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_api() -> Iterator[tuple[str, type[RefusingApi]]]:
    handler = type("Refusing", (RefusingApi,), {"count": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_an_unreachable_api_stops_the_run_before_any_test_with_one_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", "nf-token-for-nobody")
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", url)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", PROJECT)
    pytester.makepyfile(test_twelve=TWELVE_SANDBOX_TESTS)
    result = run_pytest(pytester)
    text = output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert text.count(f"cannot reach the Northflank API at {url}") == 1
    assert "(from environment variable NORTHFLANK_API_BASE_URL)" in text
    assert (
        "Start the emulator (pytest-northflank emulator) or unset NORTHFLANK_API_BASE_URL" in text
    )
    assert "Traceback" not in text
    assert "test_box" not in text  # not one test ran
    # No reaper (nor anything else) outlives the run.
    assert processes_mentioning(url) == []


def test_a_wrong_project_costs_a_handful_of_requests_and_says_where_it_came_from(
    pytester: pytest.Pytester, remote: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", "no-such-project")
    pytester.makepyfile(test_twelve=TWELVE_SANDBOX_TESTS)
    result = run_pytest(pytester)
    text = " ".join(output(result).split())
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "project 'no-such-project' (from environment variable NORTHFLANK_PROJECT_ID) was not "
        "found" in text
    )
    assert f"Projects this token can see: {PROJECT}" in text
    assert "NORTHFLANK_PROJECT_ID" in text
    # One check, one listing of the projects for the hint; nothing per test.
    assert requests_seen(remote) <= 3
    assert services_left(remote) == []


def test_a_refused_token_costs_a_handful_of_requests(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    refusing_api: tuple[str, type[RefusingApi]],
) -> None:
    url, handler = refusing_api
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", "nf-token-that-was-revoked")
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", url)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", PROJECT)
    pytester.makepyfile(test_twelve=TWELVE_SANDBOX_TESTS)
    result = run_pytest(pytester, "-p", "xdist", "-n", "2")
    text = " ".join(output(result).split())
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "the API rejected the token from NORTHFLANK_API_TOKEN" in text
    assert "401 Unauthorized" in text
    assert "nf-token-that-was-revoked" not in text
    assert handler.count <= 2  # the check, and at most one retry


def test_a_fatal_answer_mid_run_trips_the_breaker(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    # The preflight passes; then the token is refused on every create (revoked mid-run).
    remote.control.fail_next_creates(count=100, status=401, message="token revoked")
    pytester.makepyfile(test_twelve=TWELVE_SANDBOX_TESTS)
    result = run_pytest(pytester)
    result.assert_outcomes(errors=12)
    text = output(result)
    assert (
        text.count("no request sent: an earlier answer of the API said this run cannot work") >= 10
    )
    creates_sent = 100 - remote.control.state()["faults"]["create"]["remaining"]
    # The first create trips it; a few made ahead may already have been in flight.
    assert 1 <= creates_sent <= 5
    assert services_left(remote) == []


@pytest.mark.parametrize(
    ("args", "environment", "message"),
    [
        (
            ["--nf-expiry=1e20"],
            {},
            "bad value for expiry from option --nf-expiry: 1e+20 seconds is more than a year",
        ),
        (["--nf-ready-timeout=1e400"], {}, "from option --nf-ready-timeout"),
        (
            [],
            {"NORTHFLANK_PROJECT_ID": "p" * 100_000},
            "bad value for project from environment variable NORTHFLANK_PROJECT_ID: "
            "'pppppppppppppppppppp'... is not an id (100000 characters; at most 100)",
        ),
        (["--nf-team=" + "t" * 5000], {}, "from option --nf-team"),
        (["--nf-warm-ahead=" + "9" * 30], {}, "from option --nf-warm-ahead"),
    ],
)
def test_absurd_option_values_get_the_usual_option_error(
    pytester: pytest.Pytester,
    remote: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    environment: dict[str, str],
    message: str,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(test_one="def test_box(nf_sandbox):\n    pass\n")
    result = run_pytest(pytester, *args)
    text = output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in " ".join(text.split())
    for raw in ("Traceback", "OverflowError", "InvalidURL"):
        assert raw not in text
    assert requests_seen(remote) == 0
