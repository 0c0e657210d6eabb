"""Secrets: a run with a distinctive API token and secrets in the sandbox environment (the
marker's ``env`` and ``Sandbox.run(env=...)``). None of them may appear in the terminal output
(-vv, long tracebacks with local variables, failure sections, keep instructions), the JUnit
XML, the log lines (DEBUG, httpx/httpcore/websockets included), exception messages or reprs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import PROJECT, output, point_at, run_pytest, services_left

from pytest_northflank.client import NorthflankClient
from pytest_northflank.emulator import EmulatorServer

TOKEN = f"nfp-secret-token-{secrets.token_hex(12)}"
DB_PASSWORD = f"db-password-{secrets.token_hex(8)}"
API_KEY = f"run-api-key-{secrets.token_hex(8)}"

# The inner tests read the secrets from the environment, as real suites do: a secret written in
# a test's source would be shown by pytest with that source, which is no leak of ours.
INNER = f'''
import logging
import os
import pytest
from pytest_northflank import CommandFailed, CommandTimeout, ExecError
from pytest_northflank.emulator import EmulatorControl

pytestmark = pytest.mark.nf_sandbox(
    env={{"DB_PASSWORD": os.environ["INNER_DB_PASSWORD"], "MODE": "test"}},
    command="sh -c 'echo starting with $DB_PASSWORD; exec sleep infinity'",
)
SEEN = "seen.txt"


def note(*values):
    with open(SEEN, "a") as seen:
        for value in values:
            seen.write(f"{{value!s}}\\n{{value!r}}\\n")


def test_the_secret_reaches_the_sandbox(nf_sandbox):
    result = nf_sandbox.run('test "$DB_PASSWORD" = "$(cat /proc/1/environ | tr "\\\\0" "\\\\n" '
                            '| sed -n "s/^DB_PASSWORD=//p")"')
    assert result.ok
    assert nf_sandbox.run("printenv DB_PASSWORD | wc -c").stdout.strip() == "{len(DB_PASSWORD) + 1}"


def test_a_failed_check_that_prints_it(nf_sandbox):
    logging.getLogger("inner").debug("about to fail")
    nf_sandbox.run('echo "connecting with $DB_PASSWORD" >&2; exit 3', check=True)


def test_a_timeout_with_a_secret_in_run_env(nf_sandbox):
    try:
        nf_sandbox.run("sleep 30", env={{"API_KEY": os.environ["INNER_API_KEY"]}}, timeout=0.5)
    except CommandTimeout as error:
        note(error, error.args)
        raise


def test_a_dropped_exec_with_a_secret_in_run_env(nf_sandbox):
    EmulatorControl(
        os.environ["NORTHFLANK_API_BASE_URL"], os.environ["NORTHFLANK_API_TOKEN"]
    ).drop_next_exec(after_frames=0)
    try:
        nf_sandbox.run(["echo", "x"], env={{"API_KEY": os.environ["INNER_API_KEY"]}}, cwd="/tmp")
    except ExecError as error:
        note(error, error.args)
        raise


def test_reprs(nf_sandbox, nf_settings, nf_client, nf_sandbox_factory):
    note(nf_sandbox, nf_sandbox.options, nf_settings, nf_client, nf_sandbox_factory,
         nf_settings.model_dump(), nf_settings.model_dump_json(), nf_sandbox.history,
         nf_sandbox.run("true"), vars(nf_client))
    assert False, f"{{nf_sandbox!r}} {{nf_sandbox.options!r}} {{nf_settings!r}} {{nf_client!r}}"
'''

RUN_ARGS = (
    "-vv",
    "-rA",
    "--tb=long",
    "--showlocals",
    "--junitxml=report.xml",
    "--log-level=DEBUG",
    "--log-file=run.log",
    "--log-file-level=DEBUG",
    "--nf-keep=on-failure",
)


@pytest.fixture(autouse=True)
def _secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INNER_DB_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("INNER_API_KEY", API_KEY)


@pytest.fixture
def distinctive() -> Iterator[EmulatorServer]:
    """An emulator answering to a distinctive token, as the remote API."""
    with EmulatorServer(token=TOKEN) as server:
        yield server


def everything_written(pytester: pytest.Pytester, result: pytest.RunResult) -> dict[str, str]:
    return {
        "terminal": output(result),
        "junit": (pytester.path / "report.xml").read_text(),
        "log file": (pytester.path / "run.log").read_text(),
        "messages and reprs": (pytester.path / "seen.txt").read_text(),
    }


def assert_no_secret(written: dict[str, str], *values: str) -> None:
    for where, text in written.items():
        for value in values:
            assert value not in text, f"{value!r} leaked into the {where}"


def test_no_secret_in_anything_a_real_backend_run_writes(
    pytester: pytest.Pytester, distinctive: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, distinctive)
    pytester.makepyfile(test_secret=INNER)
    result = run_pytest(pytester, *RUN_ARGS)
    result.assert_outcomes(passed=1, failed=4)
    written = everything_written(pytester, result)
    assert_no_secret(written, TOKEN, DB_PASSWORD, API_KEY)

    # It is all there, masked: the run did exercise every path that could leak.
    terminal = written["terminal"]
    assert "connecting with ***" in terminal  # CommandFailed's stderr tail
    assert "starting with ***" in terminal  # the failure section's log tail
    assert "command 'sleep 30' timed out after 0.5s" in written["messages and reprs"]
    assert "env API_KEY=*** sh -c " in terminal  # the dropped exec, in its failure section
    assert "env={'DB_PASSWORD': '***', 'MODE': '***'}" in terminal  # reprs
    assert "HTTP Request: POST " in written["log file"]  # httpx did log at DEBUG
    assert "kept 4 sandboxes (run " in terminal
    assert "  delete them: pytest-northflank reap --run " in terminal

    with NorthflankClient(TOKEN, base_url=distinctive.url) as client:
        for service in client.list_services(PROJECT):  # the sandboxes kept for inspection
            client.delete_service(PROJECT, service.id)
    assert services_left(distinctive) == []


def test_no_secret_in_anything_an_embedded_emulator_run_writes(pytester: pytest.Pytester) -> None:
    # The emulator runs inside the pytest process here: its own loggers write to the run's
    # log capture too.
    pytester.makepyfile(
        test_secret=INNER.replace("def test_a_dropped_exec", "def _not_here"),
    )
    result = run_pytest(pytester, *RUN_ARGS)
    result.assert_outcomes(passed=1, failed=3)
    written = everything_written(pytester, result)
    assert_no_secret(written, DB_PASSWORD, API_KEY)


def test_secret_looking_values_are_masked_and_others_are_not(tmp_path: Path) -> None:
    from pytest_northflank.redaction import mask, secret_values
    from pytest_northflank.sandbox import CommandResult

    env = {"DB_PASSWORD": "hunter2-long", "GITHUB_TOKEN": "gh-123", "MODE": "test", "KEY": ""}
    found = secret_values(env, {"AWS_SECRET_ACCESS_KEY": "aws/abc", "PATH": "/usr/bin"})
    assert found == ("hunter2-long", "aws/abc", "gh-123")
    assert mask("test with hunter2-long and /usr/bin", found) == "test with *** and /usr/bin"
    result = CommandResult("cmd", 1, b"", b"token gh-123 refused\n", 0.1, masked=found)
    with pytest.raises(Exception, match=r"token \*\*\* refused") as caught:
        result.check()
    assert "gh-123" not in str(caught.value)
    assert result.stderr_bytes == b"token gh-123 refused\n"  # the data itself stays exact
