"""One-shot commands over the exec WebSocket (``northflank-api.md`` section 3): run to
completion, stdin fed behind the init frame, the result collected.

Every command goes on the wire as an argv with ``shell: "none"`` and ``encoding: "base64"``:
a command string runs as ``sh -c <string>`` (the proxy's ``shell: "bash"`` treats the string
as a script path, section 10), and base64 keeps binary output byte-exact.

A timeout stops the remote command too: the argv is wrapped in coreutils
``timeout -k 2 <seconds>`` (SIGTERM at the timeout, SIGKILL 2 s later), and the client stops
waiting ``TIMEOUT_GRACE`` seconds after that and closes the socket. The image therefore needs
``timeout`` (coreutils or busybox) for timed commands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from pytest_northflank.client.arguments import check_timeout, command_argv, describe_argv
from pytest_northflank.client.connector import ExecConnector
from pytest_northflank.client.exec_session import FRAME_BYTES, ExecResult, ExecSession
from pytest_northflank.errors import ArgumentError, CommandTimeout, ExecError

__all__ = ["TIMEOUT_GRACE", "run_command"]

# Seconds the client keeps waiting after a timed command's ``timeout -k 2`` should have ended it.
TIMEOUT_GRACE = 5.0
_KILL_AFTER = 2


def _seconds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text != "0" else "0.001"


def _with_timeout(argv: list[str], timeout: float) -> list[str]:
    return ["timeout", "-k", str(_KILL_AFTER), _seconds(timeout), *argv]


def _feed(session: ExecSession, data: bytes | None) -> None:
    """Write ``data`` (if any) and EOF. A command may finish, or the connection drop, before
    its stdin is consumed; that is not an error of its own: the completion frame (or its
    absence, reported by ``wait``) says how the command ended."""
    try:
        if data:
            session.write(data)
        session.close_stdin()
    except ExecError:
        pass


def run_command(
    connector: ExecConnector,
    project_id: str,
    service_id: str,
    command: str | Sequence[str],
    *,
    shell: str | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
    on_output: Callable[[str, bytes], object] | None = None,
    description: str | None = None,
    stop_remotely: bool = True,
) -> ExecResult:
    """Run one command to completion (see ``NorthflankClient.run``)."""
    __tracebackhide__ = True  # pytest would print argv, which may carry env values
    argv = command_argv(command, shell)
    check_timeout(timeout)
    if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
        raise ArgumentError(f"input must be bytes or None, got {type(input).__name__}")
    description = description or describe_argv(argv)
    remote = timeout is not None and stop_remotely
    wire = _with_timeout(argv, timeout) if remote and timeout is not None else argv
    session = connector.start(
        project_id, service_id, wire, wait_for_init=False, description=description
    )
    feeder: threading.Thread | None = None
    try:
        if input is None or len(input) <= FRAME_BYTES:
            _feed(session, input)
        else:
            # On a thread, so a command that writes while it reads cannot deadlock us.
            feeder = threading.Thread(
                target=_feed, args=(session, input), name="nf-exec-stdin", daemon=True
            )
            feeder.start()
        wait_limit = timeout
        if remote and timeout is not None:
            wait_limit = timeout + _KILL_AFTER + TIMEOUT_GRACE
        result = session.wait(timeout=wait_limit, on_output=on_output)
    except CommandTimeout as waited:
        assert timeout is not None
        if not remote:
            raise CommandTimeout(
                f"command {description} did not finish within {timeout:g}s; the connection "
                f"was closed after {session.stdout_bytes} bytes of stdout and "
                f"{session.stderr_bytes} bytes of stderr",
                timeout=timeout,
                result=waited.result,
            ) from None
        raise CommandTimeout(
            f"command {description} did not finish within {timeout:g}s and the remote "
            f"`timeout` did not stop it within {_KILL_AFTER + TIMEOUT_GRACE:g}s more; the "
            f"connection was closed after {session.stdout_bytes} bytes of stdout and "
            f"{session.stderr_bytes} bytes of stderr",
            timeout=timeout,
            result=waited.result,
        ) from None
    finally:
        session.close()
        if feeder is not None:
            feeder.join()
    # `timeout` exits 124 (SIGTERM worked) or 137 (SIGKILL needed). The client-side clock runs
    # longer than the remote one, so a command that exited 124 on its own before the limit is
    # not mistaken for a timeout.
    if (
        remote
        and timeout is not None
        and result.exit_code in (124, 137)
        and result.duration >= timeout
    ):
        raise CommandTimeout(
            f"command {description} timed out after {timeout:g}s and was stopped "
            f"(exit {result.exit_code}); partial output: {len(result.stdout)} bytes of stdout, "
            f"{len(result.stderr)} bytes of stderr",
            timeout=timeout,
            result=result,
        )
    return result
