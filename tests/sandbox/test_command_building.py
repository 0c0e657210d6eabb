"""How Sandbox.run turns (command, env, cwd) into one argv and a stdin preamble for env, checked
by running it with the real ``sh``, ``bash``, ``dash`` and ``busybox sh`` of this machine, and
what a failed ``check()`` says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_northflank import CommandFailed, CommandResult
from pytest_northflank.commands import CommandPlan, build_command

# Prints its argv, cwd and one environment variable as JSON: what the command really received.
PROBE = (
    "import json, os, sys; "
    "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': os.environ.get('V')}))"
)

NASTY = [
    "plain",
    "two words",
    "it's",
    'say "hi"',
    "line one\nline two",
    "$HOME `id` $(id) \\ backslash",
    "-n",
    "--",
    "a=b",
    "*",
    "",
    "tab\there",
    "ünïcødé ✓",
]


def run_plan(plan: CommandPlan, stdin: bytes = b"", **kwargs: object) -> bytes:
    done = subprocess.run(
        plan.argv, input=plan.stdin + stdin, capture_output=True, check=True, timeout=30, **kwargs
    )
    return done.stdout


def probe(plan: CommandPlan) -> dict[str, object]:
    result: dict[str, object] = json.loads(run_plan(plan, env={"PATH": "/usr/bin:/bin"}))
    return result


@pytest.mark.parametrize("text", NASTY)
def test_list_arguments_env_values_and_cwd_arrive_unchanged(text: str, tmp_path: Path) -> None:
    workdir = tmp_path / f"dir {text.replace('/', '_').replace(chr(0), '')[:20]}"
    workdir.mkdir()
    plan = build_command([sys.executable, "-c", PROBE, text, "x"], env={"V": text}, cwd=workdir)
    seen = probe(plan)
    assert seen == {"argv": [text, "x"], "cwd": str(workdir), "env": text}


@settings(max_examples=60, deadline=None)
@given(
    args=st.lists(
        st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=12), max_size=4
    ),
    value=st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=12),
)
def test_any_text_survives_the_wrapping(args: list[str], value: str) -> None:
    plan = build_command([sys.executable, "-c", PROBE, *args], env={"V": value}, cwd="/")
    assert probe(plan) == {"argv": args, "cwd": "/", "env": value}


def test_a_string_runs_through_sh() -> None:
    plan = build_command("echo $((1 + 2)) | tr 3 Z")
    assert plan == CommandPlan(["sh", "-c", "echo $((1 + 2)) | tr 3 Z"])
    assert run_plan(plan) == b"Z\n"


def test_a_string_with_env_and_cwd(tmp_path: Path) -> None:
    plan = build_command('echo "$V" && pwd', env={"V": 'it\'s a "test"'}, cwd=tmp_path)
    assert run_plan(plan).decode() == f'it\'s a "test"\n{tmp_path}\n'


def test_a_program_whose_name_contains_equals_is_still_run(tmp_path: Path) -> None:
    program = tmp_path / "a=b"
    program.write_text("#!/bin/sh\necho ran with $V\n")
    program.chmod(0o755)
    plan = build_command([str(program)], env={"V": "1"})
    assert run_plan(plan) == b"ran with 1\n"


SHELLS = [
    pytest.param(["sh"], id="sh"),
    pytest.param(["bash"], id="bash"),
    pytest.param(["dash"], id="dash"),
    pytest.param(["busybox", "sh"], id="busybox"),
]


@pytest.mark.parametrize("shell", SHELLS)
def test_env_values_never_reach_the_command_line_and_stdin_follows_untouched(
    shell: list[str],
) -> None:
    if shutil.which(shell[0]) is None:
        pytest.skip(f"{shell[0]} is not installed here")
    secret = "s3cr3t pass\nword \\0101 %s ✓"
    plan = build_command(
        ["sh", "-c", 'printf "%s|" "$V"; cat /proc/$$/cmdline | tr "\\0" " "; echo; cat'],
        env={"V": secret, "EMPTY": ""},
    )
    assert not any("s3cr3t" in part for part in plan.argv)
    out = run_plan(CommandPlan([*shell, *plan.argv[1:]], plan.stdin), b"the input\nrest")
    value, _, rest = out.decode().partition("|")
    assert value == secret
    cmdline, _, stdin_seen = rest.partition("\n")
    assert "s3cr3t" not in cmdline
    assert stdin_seen == "the input\nrest"


def test_a_missing_directory_fails_the_command(tmp_path: Path) -> None:
    plan = build_command(["true"], cwd=tmp_path / "missing")
    done = subprocess.run(plan.argv, capture_output=True)
    assert done.returncode != 0
    assert b"missing" in done.stderr


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"command": []}, ValueError, "empty"),
        ({"command": ["echo", 3]}, TypeError, "command items"),
        ({"command": "true", "env": {"1X": "v"}}, ValueError, "'1X' is not an environment"),
        ({"command": "true", "env": {"A B": "v"}}, ValueError, "'A B'"),
        ({"command": "true", "env": {"X": 1}}, TypeError, "value of X"),
    ],
)
def test_bad_commands_are_refused_before_anything_runs(
    kwargs: dict[str, object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        build_command(**kwargs)  # type: ignore[arg-type]


def result(exit_code: int, stdout: bytes = b"", stderr: bytes = b"") -> CommandResult:
    return CommandResult("make test", exit_code, stdout, stderr, 1.5, sandbox="nft-x-m-1-t")


def test_result_text_and_bytes() -> None:
    r = result(0, "héllo\n".encode(), b"\xff\n")
    assert (r.stdout, r.stdout_bytes, r.ok) == ("héllo\n", "héllo\n".encode(), True)
    assert r.stderr == "\ufffd\n"
    assert r.check() is r
    assert "exit_code=0" in repr(r)


def test_failed_check_shows_command_exit_code_and_end_of_stderr() -> None:
    stderr = "".join(f"line {n}\n" for n in range(1, 51)).encode()
    with pytest.raises(CommandFailed) as caught:
        result(2, b"out\n", stderr).check()
    message = str(caught.value)
    assert message.startswith("command 'make test' exited with 2 in sandbox nft-x-m-1-t")
    assert "line 50" in message
    assert "line 31" in message
    assert "line 30\n" not in message
    assert "out" not in message


def test_failed_check_falls_back_to_stdout_or_says_there_was_no_output() -> None:
    with pytest.raises(CommandFailed, match="end of stdout ---\nonly stdout"):
        result(1, b"only stdout\n").check()
    with pytest.raises(CommandFailed, match=r"exited with 1 in sandbox nft-x-m-1-t \(no output\)"):
        result(1).check()
