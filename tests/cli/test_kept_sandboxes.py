"""Kept sandboxes from the user's side: a standalone emulator (its "Use it:" line is all the
shell needs), a pytest run that keeps two sandboxes, then ``pytest-northflank list``, ``exec``,
``shell`` (through a real pseudo-terminal) and ``reap --all``."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from northflank_environment import NF_VARIABLES

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.models import DeploymentServiceSpec
from pytest_northflank.run.ownership import Ownership

PROJECT = "default-project"
CLI = [sys.executable, "-m", "pytest_northflank.cli"]
SUITE = """
import pytest

def test_fails(nf_sandbox):
    nf_sandbox.write_text("evidence.txt", "left for inspection\\n")
    assert False, "keep me"

@pytest.mark.nf_sandbox(keep="always")
def test_kept_always(nf_sandbox):
    pass

def test_passes(nf_sandbox):
    pass
"""


@dataclass
class Kept:
    env: dict[str, str] = field(repr=False)  # holds the token
    failed: str
    always: str
    summary: str


def clean_environ() -> dict[str, str]:
    """Ours without what could point a run elsewhere (NF_EMULATOR_IMAGES=off stays)."""
    dropped = {*NF_VARIABLES, "PYTEST_XDIST_WORKER"}
    return {name: value for name, value in os.environ.items() if name not in dropped}


@pytest.fixture(scope="module")
def emulator_env() -> Iterator[dict[str, str]]:
    """A standalone emulator with a generated token; the environment its "Use it:" line
    exports, applied to a clean copy of ours."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_northflank.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_environ(),
    )
    assert process.stdout is not None
    try:
        line = ""
        while not line.startswith("Use it:"):
            line = process.stdout.readline()
            assert line, "the emulator ended before its Use it line"
        words = shlex.split(line.removeprefix("Use it:").split(";")[0])
        assert words[0] == "export"
        exported = dict(word.split("=", 1) for word in words[1:])
        assert set(exported) == {
            "NORTHFLANK_API_BASE_URL",
            "NORTHFLANK_API_TOKEN",
            "NORTHFLANK_PROJECT_ID",
        }
        yield clean_environ() | exported
    finally:
        process.terminate()
        process.wait(30)
        process.stdout.close()


@pytest.fixture(scope="module")
def kept(emulator_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Kept:
    suite = tmp_path_factory.mktemp("suite")
    (suite / "test_kept.py").write_text(SUITE)
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"),
            *("--nf-keep=on-failure", "--nf-expiry=7200", str(suite / "test_kept.py")),
        ],
        env=emulator_env,
        capture_output=True,
        text=True,
        cwd=suite,
        check=False,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    kept_lines = dict(re.findall(r"^  (nft-\S+) \(project \S+; (.*)\)$", run.stdout, re.M))
    assert len(kept_lines) == 2, run.stdout
    [failed] = [name for name, why in kept_lines.items() if why.startswith("failed:")]
    [always] = [name for name, why in kept_lines.items() if why == "kept as asked"]
    return Kept(emulator_env, failed, always, run.stdout)


def cli(kept: Kept, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=kept.env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_summary_prints_the_commands_for_each_kept_sandbox(kept: Kept) -> None:
    url = kept.env["NORTHFLANK_API_BASE_URL"]
    for name in (kept.failed, kept.always):
        assert f"    shell:  pytest-northflank shell {name} --project {PROJECT} --api-url {url}"
        assert (
            f"    exec:   pytest-northflank exec {name} --project {PROJECT} --api-url {url} "
            "-- CMD..." in kept.summary
        )
    assert f"  {kept.failed} (project {PROJECT}; failed: test_kept.py::test_fails)" in kept.summary


def test_list_shows_who_kept_each_one_why_age_and_deadline(kept: Kept) -> None:
    listing = cli(kept, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "RUN", "WORKER", "AGE", "DEADLINE", "KEPT", "TEST"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    failed, always = rows[kept.failed], rows[kept.always]
    assert failed[-2:] == ["failed", "test_kept.py::test_fails"]
    assert always[-2:] == ["always", "test_kept.py::test_kept_always"]
    assert re.fullmatch(r"\d+m", failed[3])  # age
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", failed[4])  # deadline (from --nf-expiry)
    assert len(rows) == 2  # the passing test's sandbox was deleted


def test_exec_runs_one_command_with_its_exit_code_and_stdin(kept: Kept) -> None:
    shown = cli(kept, "exec", kept.failed, "--", "cat", "evidence.txt")
    assert (shown.returncode, shown.stdout) == (0, "left for inspection\n"), shown.stderr
    failing = cli(kept, "exec", kept.failed, "--", "sh", "-c", "echo oops >&2; exit 7")
    assert (failing.returncode, failing.stderr) == (7, "oops\n")
    piped = cli(kept, "exec", kept.always, "--", "tr", "a-z", "A-Z", stdin="piped in\n")
    assert (piped.returncode, piped.stdout) == (0, "PIPED IN\n")
    missing = cli(kept, "exec", "nft-nosuch-m-1", "--", "true")
    assert missing.returncode == 2
    assert "no service 'nft-nosuch-m-1' in project default-project" in missing.stderr


class Terminal:
    """A command on a real pseudo-terminal (its controlling terminal), read until patterns."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.resize(24, 80)
        # The child becomes a session leader and takes the terminal as its controlling one,
        # so a window change sends it SIGWINCH as it would from a terminal emulator.
        take_terminal = "import fcntl,sys,termios,runpy; fcntl.ioctl(0, termios.TIOCSCTTY, 0);"
        take_terminal += "sys.argv=['pytest-northflank']+sys.argv[1:];"
        take_terminal += "runpy.run_module('pytest_northflank.cli', run_name='__main__')"
        self.process = subprocess.Popen(
            [sys.executable, "-c", take_terminal, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern.encode(), self.seen)
            if match:
                self.seen = self.seen[match.end() :]
                return match.group(0).decode()
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.seen[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    assert re.search(pattern.encode(), self.seen), self.seen[-2000:]

    def wait(self) -> int:
        code = self.process.wait(60)
        os.close(self.master)
        return code


def test_shell_is_an_interactive_terminal_with_resize_ctrl_c_and_exit_code(kept: Kept) -> None:
    terminal = Terminal(["shell", kept.failed], kept.env)
    try:
        terminal.expect(r"[#$] ")  # the prompt: typing before it could be flushed by the shell
        terminal.send("echo sum-$((6*7))\r")
        terminal.expect("sum-42")
        terminal.send("test -t 0 && echo tty-$((2+3))\r")
        terminal.expect("tty-5")
        terminal.resize(33, 101)  # SIGWINCH -> a resize frame -> the remote terminal's size
        time.sleep(0.5)  # the resize frame is sent from the next input poll
        terminal.send("stty size\r")
        terminal.expect("33 101")
        terminal.send("sleep 300; echo not-$((0))-interrupted\r")
        time.sleep(1)
        terminal.send("\x03")  # Ctrl-C stops the remote command, not the session
        terminal.send("echo after-$((1+1))\r")
        terminal.expect("after-2")
        assert b"not-0-interrupted" not in terminal.seen
        terminal.send("exit 3\r")
        assert terminal.wait() == 3
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
            terminal.process.wait(30)


def test_reap_all_asks_first_and_deletes_only_ours(kept: Kept) -> None:
    env = kept.env
    with NorthflankClient(
        env["NORTHFLANK_API_TOKEN"], base_url=env["NORTHFLANK_API_BASE_URL"]
    ) as c:
        c.create_deployment_service(
            PROJECT, DeploymentServiceSpec(name="hand-made", description="somebody's")
        )

        def names() -> set[str]:
            return {service.name for service in c.list_services(PROJECT)}

        ours = {kept.failed, kept.always}
        assert ours <= names()
        # No terminal to ask on: nothing is deleted.
        refused = cli(kept, "reap", "--all")
        assert refused.returncode == 1
        assert "not confirmed: no terminal to ask on; pass --yes in scripts" in refused.stdout
        assert ours <= names()
        # Asked on a terminal: "n" keeps them, "y" deletes them.
        terminal = Terminal(["reap", "--all"], env)
        terminal.expect(r"delete these 2 service\(s\) in project default-project\? \[y/N\] ")
        terminal.send("n\r")
        assert terminal.wait() == 1
        assert ours <= names()
        terminal = Terminal(["reap", "--all"], env)
        terminal.expect(r"\[y/N\] ")
        terminal.send("y\r")
        terminal.expect(f"deleted {kept.always}")
        assert terminal.wait() == 0
        assert names() == {"hand-made"}
        c.delete_service(PROJECT, "hand-made")


def test_reap_all_with_yes_needs_no_terminal(kept: Kept) -> None:
    env = kept.env
    owner = Ownership("yes123", "gw0")
    name = owner.service_name(1, "scripted")
    with NorthflankClient(
        env["NORTHFLANK_API_TOKEN"], base_url=env["NORTHFLANK_API_BASE_URL"]
    ) as c:
        spec = DeploymentServiceSpec(
            name=name, description=owner.description(datetime.now(timezone.utc))
        )
        c.create_deployment_service(PROJECT, spec)
        reaped = cli(kept, "reap", "--all", "--yes")
        assert reaped.returncode == 0, reaped.stderr
        assert f"deleted {name}" in reaped.stdout
        assert name not in {service.name for service in c.list_services(PROJECT)}
