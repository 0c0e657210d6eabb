"""How Sandbox.run turns (command, env, cwd) into one argv, checked by running it with the real
``sh`` and ``env`` of this machine, and what a failed ``check()`` says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_northflank import CommandFailed, CommandResult
from pytest_northflank.sandbox import build_argv

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


def probe(argv: list[str]) -> dict[str, object]:
    done = subprocess.run(
        argv, capture_output=True, check=True, timeout=30, env={"PATH": "/usr/bin:/bin"}
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("text", NASTY)
def test_list_arguments_env_values_and_cwd_arrive_unchanged(text: str, tmp_path: Path) -> None:
    workdir = tmp_path / f"dir {text.replace('/', '_').replace(chr(0), '')[:20]}"
    workdir.mkdir()
    argv = build_argv([sys.executable, "-c", PROBE, text, "x"], env={"V": text}, cwd=workdir)
    seen = probe(argv)
    assert seen == {"argv": [text, "x"], "cwd": str(workdir), "env": text}


@settings(max_examples=60, deadline=None)
@given(
    args=st.lists(
        st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=12), max_size=4
    ),
    value=st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=12),
)
def test_any_text_survives_the_wrapping(args: list[str], value: str) -> None:
    argv = build_argv([sys.executable, "-c", PROBE, *args], env={"V": value}, cwd="/")
    assert probe(argv) == {"argv": args, "cwd": "/", "env": value}


def test_a_string_runs_through_sh() -> None:
    argv = build_argv("echo $((1 + 2)) | tr 3 Z")
    assert argv == ["sh", "-c", "echo $((1 + 2)) | tr 3 Z"]
    assert subprocess.run(argv, capture_output=True, check=True).stdout == b"Z\n"


def test_a_string_with_env_and_cwd(tmp_path: Path) -> None:
    argv = build_argv('echo "$V" && pwd', env={"V": 'it\'s a "test"'}, cwd=tmp_path)
    out = subprocess.run(argv, capture_output=True, check=True).stdout.decode()
    assert out == f'it\'s a "test"\n{tmp_path}\n'


def test_a_program_whose_name_contains_equals_is_still_run(tmp_path: Path) -> None:
    program = tmp_path / "a=b"
    program.write_text("#!/bin/sh\necho ran with $V\n")
    program.chmod(0o755)
    argv = build_argv([str(program)], env={"V": "1"})
    assert subprocess.run(argv, capture_output=True, check=True).stdout == b"ran with 1\n"


def test_a_missing_directory_fails_the_command(tmp_path: Path) -> None:
    argv = build_argv(["true"], cwd=tmp_path / "missing")
    done = subprocess.run(argv, capture_output=True)
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
        build_argv(**kwargs)  # type: ignore[arg-type]


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
