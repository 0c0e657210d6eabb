"""Commands over the exec WebSocket (``northflank-api.md`` section 3): one-shot runs and
streaming sessions, on the synchronous ``websockets`` client.

Every command goes on the wire as an argv with ``shell: "none"`` and ``encoding: "base64"``:
a command string runs as ``sh -c <string>`` (the proxy's ``shell: "bash"`` treats the string
as a script path, section 10), and base64 keeps binary output byte-exact.

A timeout stops the remote command too: the argv is wrapped in coreutils
``timeout -k 2 <seconds>`` (SIGTERM at the timeout, SIGKILL 2 s later), and the client stops
waiting ``TIMEOUT_GRACE`` seconds after that and closes the socket. The image therefore needs
``timeout`` (coreutils or busybox) for timed commands.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import math
import re
import shlex
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import websockets.exceptions as ws_errors
from websockets.sync.client import ClientConnection, connect

from pytest_northflank.client._closing import ClosesOnExit
from pytest_northflank.client.frames import (
    CompletionFrame,
    ErrorFrame,
    ExecInitFrame,
    OutputFrame,
    ServerFrame,
    Stream,
    build_exec_context,
    decode_exec_frame,
    encode_exec_init,
    encode_payload,
    encode_resize,
    encode_stdin_end,
)
from pytest_northflank.client.rest import RestTransport, api_error, quote
from pytest_northflank.errors import ArgumentError, CommandTimeout, ExecError, TransportError

__all__ = [
    "FRAME_BYTES",
    "TIMEOUT_GRACE",
    "ExecConnector",
    "ExecOutput",
    "ExecResult",
    "ExecSession",
    "ExecSessionInfo",
    "check_command_text",
    "check_count",
    "check_ids",
    "check_no_nul",
    "check_terminal_size",
    "check_timeout",
    "command_argv",
    "describe_argv",
    "run_command",
]

# Raw bytes per stdin payload frame: a multiple of 3 so every frame's base64 is unpadded and
# the stream decodes the same frame by frame or concatenated; big enough that per-frame costs
# (JSON, syscalls, the proxy's per-message work) vanish next to the bytes.
FRAME_BYTES = 192 * 1024
# Seconds the client keeps waiting after a timed command's ``timeout -k 2`` should have ended it.
TIMEOUT_GRACE = 5.0
_KILL_AFTER = 2
# Largest server message accepted; the contract says servers keep frames to tens of KiB.
_MAX_MESSAGE = 16 * 1024 * 1024
_HANDSHAKE_ATTEMPTS = 3
_HANDSHAKE_DELAY = 0.5
_RETRYABLE_UPGRADE = (502, 503, 504)
_DESCRIBE_LIMIT = 200
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONNECT_TAKES_PROXY = "proxy" in inspect.signature(connect).parameters
# websockets logs every frame, init (with the API token) included, at DEBUG. Its records go
# to this logger, held at INFO so that a DEBUG root logger (pytest --log-level=DEBUG) can
# never capture a token.
_WS_LOGGER = logging.getLogger("pytest_northflank.client.websockets")
_WS_LOGGER.setLevel(logging.INFO)


def check_timeout(timeout: float | None, name: str = "timeout") -> None:
    """Refuse (``ArgumentError``) a timeout that is not None or a positive, finite number of
    seconds."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ArgumentError(
            f"{name} must be a number of seconds or None, got {type(timeout).__name__} {timeout!r}"
        )
    if math.isnan(timeout) or math.isinf(timeout):
        raise ArgumentError(
            f"{name} must be a finite number of seconds, got {timeout} (None: no limit)"
        )
    if timeout <= 0:
        raise ArgumentError(f"{name} must be positive, got {timeout} (seconds)")


def check_count(name: str, value: int, *, minimum: int) -> None:
    """Refuse (``ArgumentError``) a count that is not a whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ArgumentError(f"{name} must be at least {minimum}, got {value}")


@dataclass
class ExecResult:
    """The outcome of a command: exit code, exact stdout/stderr bytes, the proxy's status and
    message, and the wall-clock duration in seconds (connect to completion).

    ``exit_code`` is -1 when no exit code is known: the proxy sent none, or (in the ``result``
    of a ``CommandTimeout``, status ``"Timeout"``) the command never reported completion.
    """

    exit_code: int
    stdout: bytes
    stderr: bytes
    status: str
    message: str | None
    duration: float
    command: str = ""

    @property
    def ok(self) -> bool:
        """True when the exit code is 0."""
        return self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ExecOutput:
    """One chunk of a session's output as it arrived."""

    stream: Stream
    data: bytes

    @property
    def text(self) -> str:
        """The chunk decoded as UTF-8 (a multi-byte character may be split across chunks)."""
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ExecSessionInfo:
    """Where the command landed, from the server's init frame."""

    instance_name: str | None = None
    container_name: str | None = None


def describe_argv(argv: Sequence[str]) -> str:
    """A shell-quoted, length-limited rendering of argv for messages. The values an ``env``
    prefix assigns are shown as ``***`` (``env DB_PASSWORD=*** psql``): they may be secrets."""
    shown = [shlex.quote(arg) for arg in argv]
    if argv and argv[0] == "env":
        for position in range(1, len(argv)):
            name, equals, _ = argv[position].partition("=")
            if argv[position].startswith("-"):
                continue  # an option of env such as -i
            if not (equals and _ENV_ASSIGNMENT.match(name)):
                break  # the program env runs
            shown[position] = f"{name}=***"
    text = " ".join(shown)
    return text if len(text) <= _DESCRIBE_LIMIT else text[:_DESCRIBE_LIMIT] + "..."


def check_command_text(command: str) -> None:
    """Refuse (``ArgumentError``) a command string holding a NUL, saying where."""
    if "\0" in command:
        raise ArgumentError(
            "the command contains a NUL character, which no program can receive "
            f"(at position {command.index(chr(0))})"
        )


def check_no_nul(argv: Sequence[str]) -> None:
    """Refuse (``ArgumentError``) an argv with a NUL in any element, naming the element."""
    for position, arg in enumerate(argv):
        if "\0" in arg:
            name = "the program name" if position == 0 else f"argument {position}"
            raise ArgumentError(
                f"{name} of the command contains a NUL character, which no program can "
                "receive (arguments end at the first NUL)"
            )


def command_argv(command: str | Sequence[str], shell: str | None = None) -> list[str]:
    """The argv that runs ``command``.

    A string runs through ``sh -c`` unless ``shell`` says otherwise: ``shell="none"`` splits it
    shell-style and runs it directly, any other ``shell`` (``"bash -c"``) is split and gets the
    string appended. A sequence is an argv and runs as is (``shell`` must be None or "none").
    """
    if isinstance(command, str):
        if not command.strip():
            raise ArgumentError("command must not be empty")
        check_command_text(command)
        if shell is None:
            return ["sh", "-c", command]
        if shell == "none":
            return shlex.split(command)
        prefix = shlex.split(shell)
        if not prefix:
            raise ArgumentError(f"shell {shell!r} is empty")
        check_no_nul(prefix)
        return [*prefix, command]
    argv = list(command)
    if not argv:
        raise ArgumentError("command argv must not be empty")
    if not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"command argv must be strings, got {argv!r}")
    if shell not in (None, "none"):
        raise ArgumentError(f"shell={shell!r} applies to a command string, not an argv list")
    check_no_nul(argv)
    return argv


def _seconds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text != "0" else "0.001"


def _with_timeout(argv: list[str], timeout: float) -> list[str]:
    return ["timeout", "-k", str(_KILL_AFTER), _seconds(timeout), *argv]


def check_ids(**ids: str) -> None:
    """Refuse (``ArgumentError``) an empty or non-string project or service id, naming it."""
    for name, value in ids.items():
        if not isinstance(value, str) or not value:
            raise ArgumentError(f"{name} must be a non-empty string, got {value!r}")


def check_terminal_size(rows: int, columns: int) -> None:
    """Refuse (``ArgumentError``) a terminal size that is not two whole numbers >= 1."""
    check_count("rows", rows, minimum=1)
    check_count("columns", columns, minimum=1)


def _http_to_ws(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    raise ValueError(f"base_url must be http(s), got {base_url!r}")


class ExecConnector:
    """Opens exec (and log-tail) WebSockets for one API base and token."""

    def __init__(
        self, rest: RestTransport, *, team_id: str | None, open_timeout: float = 30.0
    ) -> None:
        self._rest = rest
        self.team_id = team_id
        self.open_timeout = open_timeout
        self.ws_base = _http_to_ws(rest.base_url)
        # websockets >= 15 looks proxies up in the environment on every connect (a scan of all
        # variables); the answer does not change, so look once.
        self._options: dict[str, Any] = {}
        if _CONNECT_TAKES_PROXY and not urllib.request.getproxies():
            self._options["proxy"] = None

    def __repr__(self) -> str:
        return f"ExecConnector(ws_base={self.ws_base!r}, team_id={self.team_id!r})"

    def exec_path(self, project_id: str, service_id: str) -> str:
        """``/v1/command-exec/[teams/{t}/]projects/{p}/services/{s}`` (team segment inside)."""
        check_ids(project_id=project_id, service_id=service_id)
        team = f"/teams/{quote(self.team_id)}" if self.team_id else ""
        return f"/v1/command-exec{team}/projects/{quote(project_id)}/services/{quote(service_id)}"

    def connect(self, path: str, *, what: str = "exec") -> ClientConnection:
        """Open a WebSocket to ``path``, retrying only the opening handshake (nothing has been
        sent yet, so a retry cannot run anything twice)."""
        url = self.ws_base + path
        for attempt in range(_HANDSHAKE_ATTEMPTS):
            last = attempt == _HANDSHAKE_ATTEMPTS - 1
            try:
                conn: ClientConnection = connect(
                    url,
                    open_timeout=self.open_timeout,
                    close_timeout=5,
                    compression=None,  # base64 payloads: deflate costs CPU for ~25%
                    max_size=_MAX_MESSAGE,
                    user_agent_header=self._rest.user_agent,
                    logger=_WS_LOGGER,
                    **self._options,
                )
                # Entering marks the connection as managed (websockets >= 17.1 warns about
                # bare connect() otherwise); callers close it explicitly.
                return conn.__enter__()
            except ws_errors.InvalidStatus as exc:
                status = exc.response.status_code
                if status in _RETRYABLE_UPGRADE and not last:
                    time.sleep(_HANDSHAKE_DELAY * (attempt + 1))
                    continue
                raise api_error(
                    status,
                    bytes(exc.response.body or b""),
                    method="GET",
                    path=path,
                    scrub=self._rest.scrub,
                    reason=f"{what} WebSocket upgrade rejected: {exc.response.reason_phrase}",
                ) from None
            except (TimeoutError, OSError, ws_errors.InvalidHandshake) as exc:
                if last:
                    raise TransportError(
                        f"{what} WebSocket {url} could not be opened after "
                        f"{_HANDSHAKE_ATTEMPTS} attempts: {type(exc).__name__}: "
                        f"{self._rest.scrub(str(exc))}"
                    ) from None
                time.sleep(_HANDSHAKE_DELAY * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def start(
        self,
        project_id: str,
        service_id: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        rows: int | None = None,
        columns: int | None = None,
        wait_for_init: bool = True,
        description: str | None = None,
    ) -> ExecSession:
        """Connect, send ``init`` and return the session (after the server's init when
        ``wait_for_init``; a one-shot run skips the wait and pipelines stdin behind init)."""
        __tracebackhide__ = True  # pytest would print argv, which may carry env values
        if tty:
            check_terminal_size(24 if rows is None else rows, 80 if columns is None else columns)
        started = time.monotonic()
        conn = self.connect(self.exec_path(project_id, service_id))
        context = build_exec_context(
            list(argv),
            shell="none",
            encoding="base64",
            tty=tty,
            tty_rows=rows if tty else None,
            tty_columns=columns if tty else None,
        )
        session = ExecSession(
            conn,
            description=description or describe_argv(argv),
            started=started,
            scrub=self._rest.scrub,
        )
        try:
            conn.send(encode_exec_init(self._rest.token, context))
            if wait_for_init:
                session.wait_for_init(self.open_timeout)
        except BaseException:
            session.close()
            raise
        return session


class ExecSession(ClosesOnExit):
    """A running command: iterate its output, write its stdin, resize its tty, wait for it.

    Use it as a context manager: leaving the block closes the connection (and, if the command
    is still running, the proxy stops it). ``write``, ``close_stdin`` and ``resize`` may be
    called from another thread than the one iterating.
    """

    def __init__(
        self,
        conn: ClientConnection,
        *,
        description: str,
        started: float,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self._conn = conn
        self._scrub = scrub
        self.command = description
        self._started = started
        self.info = ExecSessionInfo()
        self._init_seen = False
        self._completion: CompletionFrame | None = None
        self._duration = 0.0
        self._stdin_closed = False
        self._closed = False
        self._write_lock = threading.Lock()
        self.stdout_bytes = 0
        self.stderr_bytes = 0

    def __repr__(self) -> str:
        state = "finished" if self._completion else ("closed" if self._closed else "running")
        return f"ExecSession(command={self.command!r}, {state})"

    # ------------------------------------------------------------------ receiving

    @property
    def finished(self) -> bool:
        """True once the completion frame arrived."""
        return self._completion is not None

    def _fail(self, message: str) -> ExecError:
        self.abort()
        return ExecError(self._scrub(f"exec of {self.command}: {message}"))

    def _next_frame(self, deadline: float | None) -> ServerFrame | None:
        """The next frame from the server; ``None`` when ``deadline`` passed. Error frames,
        refused or missing inits and closed connections raise ``ExecError``."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        try:
            raw = self._conn.recv(timeout=remaining)
        except TimeoutError:
            return None
        except ws_errors.ConnectionClosed as exc:
            how = "closed" if isinstance(exc, ws_errors.ConnectionClosedOK) else "broke"
            if self._init_seen:
                before = "the command reported completion; its exit status is unknown"
            else:
                before = "the server's init frame"
            message = f"the connection {how} (code {_close_code(exc)}) before {before}"
            raise self._fail(message) from None
        try:
            frame = decode_exec_frame(raw)
        except ExecError as exc:
            raise self._fail(str(exc)) from None
        if isinstance(frame, ErrorFrame):
            raise self._fail(f"the server reported an error: {frame.message}")
        if isinstance(frame, ExecInitFrame):
            if not frame.ok:
                detail = f": {frame.message}" if frame.message else ""
                raise self._fail(f"the server refused the exec init (auth failed){detail}")
            if not self._init_seen:  # a repeated init is ignored, as the official clients do
                self._init_seen = True
                self.info = ExecSessionInfo(frame.instance_name, frame.container_name)
            return frame
        if not self._init_seen:
            raise self._fail(f"expected an init frame first, got {type(frame).__name__}")
        return frame

    def _receive(self, deadline: float | None) -> OutputFrame | CompletionFrame | None:
        """The next output or completion frame; ``None`` when ``deadline`` passed."""
        while True:
            frame = self._next_frame(deadline)
            if frame is None or isinstance(frame, OutputFrame | CompletionFrame):
                break
        if isinstance(frame, CompletionFrame):
            self._completion = frame
            self._duration = time.monotonic() - self._started
            self._close_quietly()
        elif isinstance(frame, OutputFrame):
            if frame.stream == "stdout":
                self.stdout_bytes += len(frame.data)
            else:
                self.stderr_bytes += len(frame.data)
        return frame

    def wait_for_init(self, timeout: float | None) -> ExecSessionInfo:
        """Block until the server's init frame (sessions do this on open)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._init_seen:
            if self._next_frame(deadline) is None:
                raise self._fail(f"no init frame from the server within {timeout:g}s")
        return self.info

    def read(self, timeout: float | None = None) -> ExecOutput | None:
        """The next output chunk; ``None`` once the command finished.

        Raises ``CommandTimeout`` if nothing arrives within ``timeout`` seconds (the connection
        is closed, which stops the command).
        """
        if self._completion is not None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        frame = self._receive(deadline)
        if frame is None:
            raise self._timeout(timeout or 0.0, "no output")
        if isinstance(frame, CompletionFrame):
            return None
        return ExecOutput(frame.stream, frame.data)

    def __iter__(self) -> Iterator[ExecOutput]:
        """Output chunks as they arrive, until the command finishes."""
        while True:
            chunk = self.read()
            if chunk is None:
                return
            yield chunk

    def _timeout(
        self, timeout: float, what: str, partial: ExecResult | None = None
    ) -> CommandTimeout:
        self.abort()
        return CommandTimeout(
            f"command {self.command} did not finish within {timeout:g}s ({what}); the "
            f"connection was closed to stop it after {self.stdout_bytes} bytes of stdout "
            f"and {self.stderr_bytes} bytes of stderr",
            timeout=timeout,
            result=partial,
        )

    def wait(self, timeout: float | None = None) -> ExecResult:
        """Wait for completion. Output not consumed by iterating is collected into the result.

        ``timeout`` bounds the whole wait: past it the connection is closed (stopping the
        command) and ``CommandTimeout`` is raised; its ``result`` holds the output collected
        until then (exit code -1, status ``"Timeout"``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # BytesIO grows in place and hands its buffer over without a copy: a command's output
        # costs its size in memory once, not twice (as a list of chunks joined at the end).
        stdout, stderr = io.BytesIO(), io.BytesIO()
        while self._completion is None:
            frame = self._receive(deadline)
            if frame is None:
                partial = ExecResult(
                    exit_code=-1,
                    stdout=stdout.getvalue(),
                    stderr=stderr.getvalue(),
                    status="Timeout",
                    message=None,
                    duration=time.monotonic() - self._started,
                    command=self.command,
                )
                raise self._timeout(timeout or 0.0, "waiting for completion", partial)
            if isinstance(frame, OutputFrame):
                (stdout if frame.stream == "stdout" else stderr).write(frame.data)
        return self._result(stdout.getvalue(), stderr.getvalue())

    def _result(self, stdout: bytes, stderr: bytes) -> ExecResult:
        completion = self._completion
        assert completion is not None
        status = completion.status or "Unknown"
        exit_code = completion.exit_code
        if exit_code is None:
            # No readable exit code: the status is the only signal left.
            exit_code = 0 if status == "Success" else -1
        return ExecResult(
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            status=status,
            message=completion.message,
            duration=self._duration,
            command=self.command,
        )

    @property
    def result(self) -> ExecResult | None:
        """The exit status once finished (stdout/stderr empty: a session streams them)."""
        return None if self._completion is None else self._result(b"", b"")

    # ------------------------------------------------------------------ sending

    def _send(self, message: str | bytes) -> None:
        if self._completion is not None:
            raise ExecError(f"exec of {self.command}: the command already finished")
        try:
            with self._write_lock:
                self._conn.send(message)
        except ws_errors.ConnectionClosed as exc:
            raise ExecError(
                f"exec of {self.command}: cannot send, the connection closed "
                f"(code {_close_code(exc)})"
            ) from None

    def write(self, data: bytes | str) -> None:
        """Write to the command's stdin (a str is sent as UTF-8), split into payload frames."""
        if self._stdin_closed:
            raise ExecError(f"exec of {self.command}: stdin is already closed")
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        view = memoryview(raw)
        for offset in range(0, len(raw), FRAME_BYTES):
            self._send(encode_payload(view[offset : offset + FRAME_BYTES].tobytes()))

    def close_stdin(self) -> None:
        """Send EOF to the command's stdin. Idempotent."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        self._send(encode_stdin_end())

    def resize(self, rows: int, columns: int) -> None:
        """Resize the command's terminal (only meaningful with ``tty=True``); both at least 1."""
        check_terminal_size(rows, columns)
        self._send(encode_resize(rows, columns))

    # ------------------------------------------------------------------ closing

    def _close_quietly(self) -> None:
        if self._closed:
            return
        if self._write_lock.locked():
            # Another thread is mid-send and may be blocked holding the connection's lock:
            # the command is over, so drop the socket rather than wait behind it.
            self._closed = False
            self.abort()
            return
        self._closed = True
        # After completion the server closes with 1000; close() finishes that handshake.
        self._conn.close()

    def abort(self) -> None:
        """Drop the connection now, even if a sender is blocked (the proxy then stops the
        command). Idempotent."""
        if self._closed:
            return
        self._closed = True
        # A thread blocked in sendall holds the connection's lock; shutting the socket down
        # wakes it so close() below cannot hang behind it.
        with contextlib.suppress(OSError):
            self._conn.socket.shutdown(socket.SHUT_RDWR)
        self._conn.close()

    def close(self) -> None:
        """Close the connection; a still-running command is stopped by the proxy."""
        if self._completion is None:
            self.abort()
        else:
            self._close_quietly()


def _close_code(exc: ws_errors.ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "none, no close frame"
    reason = f" {frame.reason}" if frame.reason else ""
    return f"{int(frame.code)}{reason}"


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
) -> ExecResult:
    """Run one command to completion (see ``NorthflankClient.run``)."""
    __tracebackhide__ = True  # pytest would print argv, which may carry env values
    argv = command_argv(command, shell)
    check_timeout(timeout)
    if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
        raise ArgumentError(f"input must be bytes or None, got {type(input).__name__}")
    description = describe_argv(argv)
    wire = argv if timeout is None else _with_timeout(argv, timeout)
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
        wait_limit = None if timeout is None else timeout + _KILL_AFTER + TIMEOUT_GRACE
        result = session.wait(timeout=wait_limit)
    except CommandTimeout as waited:
        assert timeout is not None
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
    if timeout is not None and result.exit_code in (124, 137) and result.duration >= timeout:
        raise CommandTimeout(
            f"command {description} timed out after {timeout:g}s and was stopped "
            f"(exit {result.exit_code}); partial output: {len(result.stdout)} bytes of stdout, "
            f"{len(result.stderr)} bytes of stderr",
            timeout=timeout,
            result=result,
        )
    return result
