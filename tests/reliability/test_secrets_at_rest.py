"""Secrets at rest and in passing: no secret or secret-derived hash in the run's files, no env
value in the host's process list, none in frames pytest prints whatever is malformed beside it,
a reaper that inherits nothing it does not need, and no masking of short values."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from pathlib import Path

import pytest
from reliability_helpers import output, run_pytest

from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.redaction import MIN_MASKED_LENGTH, mask, secret_values
from pytest_northflank.run.reaper import ReaperProcess
from pytest_northflank.sandbox import Sandbox

WEAK_PASSWORD = f"hunter{secrets.randbelow(90) + 10}"
API_KEY = f"api-key-{secrets.token_hex(8)}"


def host_command_lines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    return lines


def test_run_env_values_never_show_in_the_hosts_process_list(sandbox: Sandbox) -> None:
    duration = f"2.{secrets.randbelow(900) + 100}"  # tells this sleep from any other
    seen_running: list[bytes] = []
    seen_secret: list[bytes] = []

    def run() -> None:
        # With a timeout, coreutils `timeout` runs beside the command the whole time: a value
        # on a command line would be in its argv for as long.
        sandbox.run(["sleep", duration], env={"API_KEY": API_KEY}, timeout=30)

    runner = threading.Thread(target=run)
    runner.start()
    while runner.is_alive():
        for line in host_command_lines():
            if f"sleep\0{duration}".encode() in line:
                seen_running.append(line)
            if API_KEY.encode() in line:
                seen_secret.append(line)
        time.sleep(0.01)
    runner.join()
    assert seen_running  # the scan sees the sandbox's processes
    assert seen_secret == []
    # ... and the value did reach the command.
    assert sandbox.run('printf %s "$API_KEY"', env={"API_KEY": API_KEY}).stdout == API_KEY


MALFORMED_BESIDE_SECRETS = """
import os
import pytest

SECRET = os.environ["INNER_API_KEY"]

def test_a_bad_command_item(nf_sandbox):
    nf_sandbox.run(["echo", 3], env={"API_KEY": SECRET})

def test_a_bad_variable_name(nf_sandbox):
    nf_sandbox.run("true", env={"API_KEY": SECRET, "1BAD": "x"})

def test_a_bad_value_type(nf_sandbox):
    nf_sandbox.run("true", env={"API_KEY": SECRET, "N": 1})

def test_a_bad_timeout(nf_sandbox):
    nf_sandbox.run("true", env={"API_KEY": SECRET}, timeout=-1)

def test_a_bad_factory_call(nf_sandbox_factory):
    nf_sandbox_factory(env={"DB_PASSWORD": SECRET}, plan="no such plan!")

def test_a_bad_env_for_the_factory(nf_sandbox_factory):
    nf_sandbox_factory(env={"DB_PASSWORD": SECRET, "2X": SECRET})
"""


def test_no_frame_pytest_prints_shows_env_values_beside_malformed_input(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INNER_API_KEY", API_KEY)
    pytester.makepyfile(test_malformed=MALFORMED_BESIDE_SECRETS)
    junit = pytester.path / "junit.xml"
    result = run_pytest(pytester, "--tb=long", "--showlocals", "-vv", f"--junitxml={junit}")
    result.assert_outcomes(failed=6)
    text = output(result)
    assert "not an environment variable name" in text  # the errors themselves are shown
    assert API_KEY not in text
    assert API_KEY not in junit.read_text()


WARM_AHEAD_SUITE = """
import hashlib, json, os, stat, tempfile
from pathlib import Path
import pytest

pytestmark = pytest.mark.nf_sandbox(env={"DB_PASSWORD": os.environ["INNER_PASSWORD"]})

def plain_spec_hash(options):
    made_of = [options.image, options.plan, sorted(options.env.items()), list(options.tags),
               options.command]
    return hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:16]

@pytest.mark.parametrize("n", range(4))
def test_box(nf_sandbox, n):
    root = Path(tempfile.gettempdir()) / f"pytest-northflank-{os.getuid()}"
    (run_dir,) = root.glob("run-*")
    plain = plain_spec_hash(nf_sandbox.options).encode()
    files = [path for path in run_dir.iterdir() if path.is_file()]
    assert any(path.name.startswith("warm-ahead") for path in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        content = path.read_bytes()
        assert os.environ["INNER_PASSWORD"].encode() not in content, path
        assert plain not in content, path
"""


def test_no_secret_or_secret_derived_hash_in_the_run_files(
    pytester: pytest.Pytester, remote: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INNER_PASSWORD", WEAK_PASSWORD)
    monkeypatch.setenv("TMPDIR", str(pytester.path / "tmp"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    (pytester.path / "tmp").mkdir()
    pytester.makepyfile(test_warm=WARM_AHEAD_SUITE)
    result = run_pytest(pytester, "-p", "xdist", "-n", "2", "--nf-warm-ahead=2")
    result.assert_outcomes(passed=4)
    assert WEAK_PASSWORD not in output(result)


def test_warm_ahead_keys_are_keyed_by_a_secret_of_the_run() -> None:
    from pytest_northflank.config.settings import SandboxOptions
    from pytest_northflank.provisioning.warm_ahead import spec_key

    options = SandboxOptions(env={"DB_PASSWORD": WEAK_PASSWORD})
    made_of = [options.image, options.plan, sorted(options.env.items()), [], options.command]
    plain = hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:16]
    first, second = secrets.token_bytes(32), secrets.token_bytes(32)
    assert spec_key(options, first) == spec_key(options, first)
    assert spec_key(options, first) != spec_key(options, second)
    assert plain not in (spec_key(options, first), spec_key(options))


def test_the_reaper_inherits_only_what_it_needs(
    emulator_clean: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-" + secrets.token_hex(8))
    monkeypatch.setenv("SOME_UNRELATED_SETTING", "x")
    reaper = ReaperProcess.start(
        ledger_path=tmp_path / "ledger.jsonl",
        base_url=emulator_clean.url,
        token=emulator_clean.token,
        run_id="envchk",
        project_id="default-project",
    )
    try:
        names: set[str] = set()
        deadline = time.monotonic() + 10
        while not names and time.monotonic() < deadline:  # empty until its exec is done
            environ = Path(f"/proc/{reaper.pid}/environ").read_bytes().split(b"\0")
            names = {line.split(b"=", 1)[0].decode() for line in environ if line}
            time.sleep(0.05)
    finally:
        reaper.finish_clean()
    assert "NORTHFLANK_API_TOKEN" in names
    assert "AWS_SECRET_ACCESS_KEY" not in names
    assert "SOME_UNRELATED_SETTING" not in names
    assert names <= {
        "NORTHFLANK_API_TOKEN",
        "PATH",
        "PYTHONPATH",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
    }
    assert (tmp_path / "reaper.log").stat().st_mode & 0o777 == 0o600


def test_short_secret_values_are_not_masked() -> None:
    short = {"DB_PASSWORD": "on", "API_KEY": "1", "SESSION_TOKEN": "x" * (MIN_MASKED_LENGTH - 1)}
    assert secret_values(short) == ()
    assert mask("turn it on: 1 of 1", secret_values(short)) == "turn it on: 1 of 1"
    assert secret_values({"DB_PASSWORD": "x" * MIN_MASKED_LENGTH}) == ("x" * MIN_MASKED_LENGTH,)


def test_start_env_values_never_show_in_the_hosts_process_list(sandbox: Sandbox) -> None:
    duration = f"5.{secrets.randbelow(900) + 100}"
    with sandbox.start(["sleep", duration], env={"API_KEY": API_KEY}) as process:
        deadline = time.monotonic() + 10
        running: list[bytes] = []
        while not running and time.monotonic() < deadline:
            lines = host_command_lines()
            running = [line for line in lines if f"sleep\0{duration}".encode() in line]
            assert not [line for line in lines if API_KEY.encode() in line]
            time.sleep(0.01)
        assert running  # the scan saw the background process
        process.kill()
