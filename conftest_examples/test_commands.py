"""Running commands and moving files: the everyday Sandbox API."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_northflank import CommandFailed, Sandbox


def test_strings_run_through_a_shell_lists_do_not(nf_sandbox: Sandbox) -> None:
    assert nf_sandbox.run("echo $((6 * 7)) | tr 4 X").stdout == "X2\n"
    # A list is argv: no shell expands the "$HOME" here.
    assert nf_sandbox.run(["echo", "$HOME", "a  b"]).stdout == "$HOME a  b\n"


def test_exit_codes_and_check(nf_sandbox: Sandbox) -> None:
    result = nf_sandbox.run("echo oops >&2; exit 3")
    assert (result.exit_code, result.ok, result.stderr) == (3, False, "oops\n")
    with pytest.raises(CommandFailed, match="exited with 3"):
        result.check()
    assert nf_sandbox.run("true", check=True).ok


@pytest.mark.nf_sandbox(env={"APP_MODE": "test", "GREETING": "hi there"})
def test_environment_through_the_marker(nf_sandbox: Sandbox) -> None:
    assert nf_sandbox.run('echo "$GREETING ($APP_MODE)"').stdout == "hi there (test)\n"


def test_per_command_environment_directory_and_stdin(nf_sandbox: Sandbox) -> None:
    nf_sandbox.run(["mkdir", "-p", "my dir"], check=True)
    result = nf_sandbox.run(
        'pwd; echo "$NAME"; cat',
        env={"NAME": 'it\'s "quoted"\nand two lines'},
        cwd="my dir",
        input="from stdin\n",
    )
    lines = result.stdout.splitlines()
    assert lines[0].endswith("/my dir")
    assert lines[1:] == ['it\'s "quoted"', "and two lines", "from stdin"]


def test_files_in_and_out(nf_sandbox: Sandbox, tmp_path: Path) -> None:
    nf_sandbox.write_text("data/config.ini", "[app]\nname = demo\n")
    assert nf_sandbox.exists("data/config.ini")
    assert not nf_sandbox.exists("data/missing.ini")
    assert "name = demo" in nf_sandbox.read_text("data/config.ini")

    nf_sandbox.run("mkdir -p out && seq 1 5 > out/numbers.txt && printf '\\000\\377' > out/raw.bin")
    nf_sandbox.download("out", tmp_path / "out")
    assert (tmp_path / "out" / "numbers.txt").read_text() == "1\n2\n3\n4\n5\n"
    assert nf_sandbox.read_bytes("out/raw.bin") == b"\x00\xff"


def test_the_sandbox_says_where_it_is(nf_sandbox: Sandbox) -> None:
    assert nf_sandbox.name
    assert nf_sandbox.id
    assert nf_sandbox.dashboard_url.startswith(("https://app.northflank.com/", "http://127.0.0.1"))
