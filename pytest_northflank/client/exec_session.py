"""An exec session (``northflank-api.md`` section 3): one command's stream over the exec
WebSocket, on the synchronous ``websockets`` client. Read its output as it arrives, write to
its stdin, resize its terminal, wait for its result. ``ExecConnector.start`` opens one.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import websockets.exceptions as ws_errors
from websockets.sync.client import ClientConnection

from pytest_northflank.client._closing import ClosesOnExit
from pytest_northflank.client.arguments import check_terminal_size
from pytest_northflank.client.frames import (
    CompletionFrame,
    ErrorFrame,
    ExecInitFrame,
    OutputFrame,
    ServerFrame,
    Stream,
    decode_exec_frame,
    encode_payload,
    encode_resize,
    encode_stdin_end,
)
from pytest_northflank.errors import CommandTimeout, ExecError

__all__ = [
    "FRAME_BYTES",
    "ExecOutput",
    "ExecResult",
    "ExecSession",
    "ExecSessionInfo",
]

# Raw bytes per stdin payload frame: a multiple of 3 so every frame's base64 is unpadded and
# the stream decodes the same frame by frame or concatenated; big enough that per-frame costs
# (JSON, syscalls, the proxy's per-message work) vanish next to the bytes.
FRAME_BYTES = 192 * 1024


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

    def wait(
        self,
        timeout: float | None = None,
        *,
        on_output: Callable[[str, bytes], object] | None = None,
    ) -> ExecResult:
        """Wait for completion. Output not consumed by iterating is collected into the result;
        ``on_output(stream, data)`` also sees each chunk as it arrives.

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
                if on_output is not None:
                    on_output(frame.stream, frame.data)
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
