"""Commands over the exec WebSocket against the emulator's real containers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from client_helpers import PROJECT, start_service

from pytest_northflank.client import NorthflankClient, Service
from pytest_northflank.errors import CommandTimeout, ExecError


def test_shell_string_and_argv(nf: NorthflankClient, service: Service) -> None:
    result = nf.run(PROJECT, service.id, "echo hello; echo oops >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code) == (b"hello\n", b"oops\n", 3)
    assert result.status == "Failure"
    assert not result.ok
    # An argv is not interpreted by a shell: the ";" is just an argument.
    argv = nf.run(PROJECT, service.id, ["echo", "a;", "$HOME", "*"])
    assert argv.stdout_text == "a; $HOME *\n"
    assert argv.ok
    assert argv.status == "Success"
    assert argv.duration > 0


def test_missing_program_exits_127(nf: NorthflankClient, service: Service) -> None:
    result = nf.run(PROJECT, service.id, ["no-such-program-xyz"])
    assert result.exit_code == 127
    assert b"no-such-program-xyz" in result.stderr


def test_binary_output_is_byte_exact(nf: NorthflankClient, service: Service) -> None:
    result = nf.run(
        PROJECT,
        service.id,
        "f=$(mktemp) && head -c 300000 /dev/urandom > $f && cat $f && sha256sum $f >&2 && rm $f",
    )
    assert result.ok
    assert len(result.stdout) == 300000
    assert result.stderr.split()[0].decode() == hashlib.sha256(result.stdout).hexdigest()


def test_stdin_round_trip_of_several_megabytes(nf: NorthflankClient, service: Service) -> None:
    payload = os.urandom(5 * 1024 * 1024 + 7)
    result = nf.run(PROJECT, service.id, ["cat"], input=payload)
    assert result.ok
    assert result.stdout == payload


def test_stdin_for_a_command_that_does_not_read_it(nf: NorthflankClient, service: Service) -> None:
    result = nf.run(PROJECT, service.id, ["true"], input=os.urandom(2 * 1024 * 1024))
    assert result.ok


def test_environment_from_the_spec(
    nf: NorthflankClient, service_factory: Callable[..., Service]
) -> None:
    with_env = service_factory("c-env", env={"GREETING": "bonjour"})
    assert nf.run(PROJECT, with_env.id, "echo $GREETING").stdout_text == "bonjour\n"


def test_timeout_stops_the_remote_command(nf: NorthflankClient, service: Service) -> None:
    with pytest.raises(CommandTimeout, match="timed out after 1s") as info:
        nf.run(PROJECT, service.id, "echo started; exec sleep 300", timeout=1)
    assert info.value.timeout == 1
    assert "8 bytes of stdout" in str(info.value)  # "started\n"
    # The output written before the limit travels with the error; the exit code is what the
    # remote `timeout` reported (SIGTERM: 124).
    partial = info.value.result
    assert (partial.stdout, partial.stderr, partial.exit_code) == (b"started\n", b"", 124)
    # The sleep is gone, not merely abandoned by the client.
    left = nf.run(PROJECT, service.id, ["sh", "-c", "ps -eo args | grep -c '^sleep 300' || true"])
    assert left.stdout_text.strip() == "0"


def test_timeout_not_reached_returns_normally(nf: NorthflankClient, service: Service) -> None:
    assert nf.run(PROJECT, service.id, "exit 124", timeout=30).exit_code == 124
    assert nf.run(PROJECT, service.id, "echo quick", timeout=30).stdout == b"quick\n"


def test_exit_code_sent_as_a_string(emulator_clean: Any, nf_clean: NorthflankClient) -> None:
    service = start_service(nf_clean, "c-strcode")
    emulator_clean.control.exit_code_as_string(True)
    result = nf_clean.run(PROJECT, service.id, "exit 42")
    assert result.exit_code == 42
    assert result.status == "Failure"


def test_connection_dropped_before_completion(
    emulator_clean: Any, nf_clean: NorthflankClient
) -> None:
    service = start_service(nf_clean, "c-drop")
    emulator_clean.control.drop_next_exec(after_frames=1)
    with pytest.raises(ExecError, match="before the command reported completion"):
        nf_clean.run(PROJECT, service.id, "echo one; sleep 1; echo two")


def test_session_streams_and_takes_stdin(nf: NorthflankClient, service: Service) -> None:
    with nf.open_session(PROJECT, service.id, ["cat"]) as session:
        assert session.info.instance_name
        session.write(b"first line\n")
        chunk = session.read(timeout=10)
        assert chunk is not None
        assert (chunk.stream, chunk.data) == ("stdout", b"first line\n")
        session.write("second\n")
        assert session.read(timeout=10).data == b"second\n"  # type: ignore[union-attr]
        session.close_stdin()
        result = session.wait(timeout=10)
    assert result.ok


def test_session_iterates_output_as_it_arrives(nf: NorthflankClient, service: Service) -> None:
    with nf.open_session(
        PROJECT, service.id, "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.05; done"
    ) as session:
        chunks = list(session)
        result = session.result
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"out1\nout2\nout3\n"
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"err1\nerr2\nerr3\n"
    assert result is not None
    assert result.ok


def test_tty_session_resizes(nf: NorthflankClient, service: Service) -> None:
    with nf.open_session(PROJECT, service.id, ["sh"], tty=True, rows=30, columns=90) as session:
        session.write("stty size\n")
        seen = b""
        while b"30 90" not in seen:
            chunk = session.read(timeout=10)
            assert chunk is not None
            seen += chunk.data
        session.resize(40, 120)
        session.write("stty size; exit 5\n")
        rest = session.wait(timeout=10)
    assert b"40 120" in rest.stdout
    assert rest.exit_code == 5


def test_closing_a_session_stops_its_command(nf: NorthflankClient, service: Service) -> None:
    with nf.open_session(PROJECT, service.id, ["sh", "-c", "echo ready; exec sleep 301"]) as s:
        assert s.read(timeout=10) is not None
    for _ in range(50):
        left = nf.run(PROJECT, service.id, ["sh", "-c", "ps -eo args | grep -c '^sleep 301'"])
        if left.stdout_text.strip() == "0":
            break
    assert left.stdout_text.strip() == "0"


def test_refusal_before_init_carries_the_server_message(
    nf: NorthflankClient, service_factory: Callable[..., Service]
) -> None:
    paused = service_factory("c-paused")
    nf.pause_service(PROJECT, paused.id)
    with pytest.raises(ExecError, match=r"the server reported an error: .*paused"):
        nf.run(PROJECT, paused.id, "true")
    with pytest.raises(ExecError, match="paused"):
        nf.open_session(PROJECT, paused.id, "true")
