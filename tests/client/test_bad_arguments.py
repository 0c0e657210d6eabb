"""Bad arguments to the client's public methods: an ``ArgumentError`` (a ``ConfigError``, also a
``ValueError``) naming the argument and the value, raised before any request or connection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from client_helpers import PROJECT

from pytest_northflank.client import NorthflankClient, Service
from pytest_northflank.errors import ArgumentError, ConfigError, NorthflankError


def refused(nf: NorthflankClient, call: Callable[[], object], message: str) -> ArgumentError:
    """Run ``call``, expect an ArgumentError whose message starts with ``message``, and check
    that no REST request went out."""
    before = nf.request_count
    with pytest.raises(ArgumentError) as caught:
        call()
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, NorthflankError)
    assert isinstance(caught.value, ValueError)  # what these calls raised before
    assert nf.request_count == before
    return caught.value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be positive, got 0"),
        ({"timeout": -1.5}, "timeout must be positive, got -1.5"),
        ({"timeout": float("nan")}, "timeout must be a finite number of seconds, got nan"),
        ({"timeout": float("inf")}, "timeout must be a finite number of seconds, got inf"),
        ({"timeout": "5"}, "timeout must be a number of seconds or None, got str '5'"),
        ({"timeout": True}, "timeout must be a number of seconds or None, got bool True"),
        ({"input": 3}, "input must be bytes or None, got int"),
    ],
)
def test_run_refuses_a_bad_timeout_or_input(
    nf: NorthflankClient, service: Service, kwargs: dict[str, Any], message: str
) -> None:
    refused(nf, lambda: nf.run(PROJECT, service.id, ["true"], **kwargs), message)


def test_run_refuses_a_bad_command(nf: NorthflankClient, service: Service) -> None:
    refused(nf, lambda: nf.run(PROJECT, service.id, "  "), "command must not be empty")
    refused(nf, lambda: nf.run(PROJECT, service.id, []), "command argv must not be empty")
    refused(nf, lambda: nf.run(PROJECT, service.id, "echo a\0b"), "the command contains a NUL")
    refused(
        nf,
        lambda: nf.run(PROJECT, service.id, ["echo"], shell="bash -c"),
        "shell='bash -c' applies to a command string",
    )


def test_scale_service_refuses_a_negative_count(nf: NorthflankClient, service: Service) -> None:
    scale = nf.scale_service
    refused(nf, lambda: scale(PROJECT, service.id, -1), "instances must be at least 0, got -1")
    refused(
        nf,
        lambda: scale(PROJECT, service.id, 1.5),  # type: ignore[arg-type]
        "instances must be a whole number, got float 1.5",
    )


def test_terminal_sizes_must_be_positive(nf: NorthflankClient, service: Service) -> None:
    refused(
        nf,
        lambda: nf.open_session(PROJECT, service.id, ["cat"], tty=True, rows=0),
        "rows must be at least 1, got 0",
    )
    refused(
        nf,
        lambda: nf.open_session(PROJECT, service.id, ["cat"], tty=True, columns=-3),
        "columns must be at least 1, got -3",
    )
    with nf.open_session(PROJECT, service.id, ["cat"], tty=True) as session:
        refused(nf, lambda: session.resize(24, 0), "columns must be at least 1, got 0")
        # The session is still usable after the refused resize.
        session.resize(30, 100)
        session.write(b"still here\n")
        chunk = session.read(timeout=10)
        assert chunk is not None
        assert b"still here" in chunk.data


def test_log_arguments_are_checked(nf: NorthflankClient, service: Service) -> None:
    logs = nf.fetch_logs
    refused(nf, lambda: logs(PROJECT, service.id, line_limit=0), "line_limit must be at least 1")
    refused(nf, lambda: logs(PROJECT, service.id, duration=-5), "duration must be at least 1")
    refused(
        nf,
        lambda: logs(PROJECT, service.id, direction="sideways"),
        "direction must be 'backward' or 'forward', got 'sideways'",
    )
    refused(
        nf,
        lambda: nf.tail_logs(PROJECT, service.id, recv_timeout=0),
        "recv_timeout must be positive, got 0",
    )
    refused(nf, lambda: nf.tail_logs(PROJECT, service.id, line_limit=-1), "line_limit must be")
    # The defaults still work.
    assert isinstance(logs(PROJECT, service.id), list)


def test_empty_ids_are_named(nf: NorthflankClient, service: Service, tmp_path: Path) -> None:
    refused(nf, lambda: nf.get_service(PROJECT, ""), "service_id must be a non-empty string")
    refused(nf, lambda: nf.get_project(""), "project_id must be a non-empty string")
    refused(nf, lambda: nf.run("", service.id, ["true"]), "project_id must be a non-empty string")
    refused(
        nf,
        lambda: nf.download(PROJECT, "", "/etc/hostname", tmp_path / "x"),
        "service_id must be a non-empty string",
    )


def test_file_copy_and_readiness_timeouts_are_checked(
    nf: NorthflankClient, service: Service, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    refused(
        nf,
        lambda: nf.upload(PROJECT, service.id, tmp_path / "f", "/tmp/f", timeout=0),
        "timeout must be positive, got 0",
    )
    refused(
        nf,
        lambda: nf.download(PROJECT, service.id, "/etc/hostname", tmp_path / "g", timeout=-1),
        "timeout must be positive, got -1",
    )
    refused(
        nf,
        lambda: nf.wait_for_service_ready(PROJECT, service.id, poll_interval=0),
        "poll_interval must be positive, got 0",
    )
    assert not (tmp_path / "g").exists()
