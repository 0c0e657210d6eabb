"""A command running in the background of a sandbox: :class:`Process` (``Sandbox.start``)."""

from __future__ import annotations

import codecs
import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from pytest_northflank.errors import ExecError, NorthflankError, ProcessEnded, WaitTimeout
from pytest_northflank.redaction import mask
from pytest_northflank.result import CommandResult

if TYPE_CHECKING:
    from pytest_northflank.client import ExecSession

__all__ = ["Process", "wrap_argv"]

Stream = Literal["stdout", "stderr"]
#: Output lines shown in errors and in the failure report.
TAIL_LINES = 20
#: How long ``stop()`` (the context manager, teardown) lets SIGTERM work before SIGKILL.
STOP_GRACE = 2.0
# The wrapper prints "<token> <pid>" on stderr, then becomes the command: the PID (which is
# also its process group in the emulator) is what terminate() signals. A random token per
# process so no output of the command can be mistaken for it.
_WRAPPER = 'printf "%s %s\\n" "$1" "$$" >&2; shift; exec "$@"'


def wrap_argv(argv: Sequence[str]) -> tuple[list[str], str]:
    """``argv`` behind the PID-reporting wrapper, and the token its report line starts with."""
    token = f"nf-process-{secrets.token_hex(8)}"
    return ["sh", "-c", _WRAPPER, "sh", token, *argv], token


class Process:
    """A command started with :meth:`Sandbox.start`, running in the background.

    Its output is collected as it arrives: read it with :attr:`stdout` / :attr:`stderr`,
    wait for a line with :meth:`wait_for_line`, iterate :meth:`lines`. Feed it with
    :meth:`write` and :meth:`close_stdin`; stop it with :meth:`terminate` (SIGTERM to its
    process group) or :meth:`kill`. Used as a context manager it is stopped on exit.
    """

    def __init__(
        self,
        session: ExecSession,
        *,
        command: str,
        token: str,
        signal_group: Callable[[int, str], object],
        secrets: Sequence[str] = (),
        on_exit: Callable[[Process], None] = lambda _process: None,
        test: str | None = None,
        default_timeout: float | None = None,
    ) -> None:
        self.command = command
        #: What :meth:`wait` uses when given no timeout (``--nf-command-timeout``; None: none).
        self.default_timeout = default_timeout
        #: The test that started it (for the failure report).
        self.test = test
        self._session = session
        self._token = token
        self._signal_group = signal_group
        self._masked = tuple(secrets)
        self._on_exit = on_exit
        self._changed = threading.Condition()
        self._bytes: dict[Stream, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._lines: dict[Stream, list[str]] = {"stdout": [], "stderr": []}
        self._partial: dict[Stream, str] = {"stdout": "", "stderr": ""}
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in self._lines}
        self._cursor: dict[Stream, int] = {"stdout": 0, "stderr": 0}
        self._pid: int | None = None
        self._pid_pending = b""
        self._exit_code: int | None = None
        self._ended = False
        self._failure: str | None = None
        self.started = time.monotonic()
        self._finished_at: float | None = None
        self._reader = threading.Thread(target=self._read, name="nf-process-output", daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        return f"Process(command={self.command!r}, {self.state})"

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------------- state

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process ended (None while it runs, or if it was cut off)."""
        return self._exit_code

    @property
    def running(self) -> bool:
        """True until the process ended or its connection was closed."""
        return not self._ended

    @property
    def state(self) -> str:
        """``running``, ``exited N``, or ``stopped`` (cut off without an exit code)."""
        if not self._ended:
            return "running"
        if self._exit_code is not None:
            return f"exited {self._exit_code}"
        return "stopped" + (f" ({self._failure})" if self._failure else "")

    @property
    def stdout(self) -> str:
        """Everything written to stdout so far (UTF-8, undecodable bytes replaced)."""
        with self._changed:
            return bytes(self._bytes["stdout"]).decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        """Everything written to stderr so far (UTF-8, undecodable bytes replaced)."""
        with self._changed:
            return bytes(self._bytes["stderr"]).decode("utf-8", "replace")

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of output (stdout and stderr, each labelled), masked."""
        parts = []
        with self._changed:
            for stream in ("stdout", "stderr"):
                kept = self._lines[stream] + (
                    [self._partial[stream]] if self._partial[stream] else []
                )
                if kept[-lines:]:
                    parts.append(f"--- end of {stream} ---\n" + "\n".join(kept[-lines:]))
        return mask("\n".join(parts), self._masked) if parts else "(no output)"

    # ------------------------------------------------------------------------------ reading

    def _read(self) -> None:
        try:
            for chunk in self._session:
                self._add(chunk.stream, chunk.data)
            result = self._session.result
            exit_code = None if result is None or result.exit_code < 0 else result.exit_code
        except NorthflankError as error:
            exit_code, self._failure = None, mask(str(error), self._masked)
        with self._changed:
            for stream, decoder in self._decoders.items():
                self._add_text(stream, decoder.decode(b"", final=True), final=True)
            self._exit_code = exit_code
            self._ended = True
            self._finished_at = time.monotonic()
            self._changed.notify_all()
        self._session.close()
        self._on_exit(self)

    def _add(self, stream: Stream, data: bytes) -> None:
        if stream == "stderr" and self._pid is None:
            data = self._take_pid_line(data)
        with self._changed:
            self._bytes[stream] += data
            self._add_text(stream, self._decoders[stream].decode(data))
            self._changed.notify_all()

    def _take_pid_line(self, data: bytes) -> bytes:
        """Strip the wrapper's ``<token> <pid>`` line, the first thing on stderr."""
        self._pid_pending += data
        line, newline, rest = self._pid_pending.partition(b"\n")
        if not newline:
            return b""
        self._pid_pending = b""
        token, _, pid = line.decode("ascii", "replace").partition(" ")
        if token == self._token and pid.isdigit():
            self._pid = int(pid)
            return rest
        self._pid = 0  # the wrapper did not run as expected: no PID, keep the output
        return line + newline + rest

    def _add_text(self, stream: Stream, text: str, *, final: bool = False) -> None:
        pending = self._partial[stream] + text
        *complete, rest = pending.split("\n")
        self._lines[stream].extend(line.removesuffix("\r") for line in complete)
        if final and rest:
            self._lines[stream].append(rest)
            rest = ""
        self._partial[stream] = rest

    def wait_for_line(
        self, pattern: str | re.Pattern[str], *, timeout: float = 30.0, stream: Stream = "stdout"
    ) -> re.Match[str]:
        """Wait until a line of ``stream`` matches ``pattern`` (``re.search``) and return the
        match. Lines are looked at once each: the next call starts after the matched line.

        Raises :class:`~pytest_northflank.errors.WaitTimeout` (a ``TimeoutError``) after
        ``timeout`` seconds, or :class:`~pytest_northflank.errors.ProcessEnded` as soon as the
        process ends without such a line; both show the last output lines.
        """
        __tracebackhide__ = True
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                lines = self._lines[stream]
                while self._cursor[stream] < len(lines):
                    line = lines[self._cursor[stream]]
                    self._cursor[stream] += 1
                    if (found := regex.search(line)) is not None:
                        return found
                if self._ended:
                    raise ProcessEnded(
                        f"{self._describe()} ended ({self.state}) before a line of {stream} "
                        f"matched {regex.pattern!r}\n{self.tail()}",
                        exit_code=self._exit_code,
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"no line of {stream} matched {regex.pattern!r} within {timeout:g}s "
                        f"({self._describe()} is still running)\n{self.tail()}",
                        timeout=timeout,
                    )
                self._changed.wait(remaining)

    def lines(self) -> Iterator[str]:
        """Lines of stdout (without line breaks), from the first, as they arrive, until the
        process ends."""
        position = 0
        while True:
            with self._changed:
                while position >= len(self._lines["stdout"]) and not self._ended:
                    self._changed.wait()
                batch = self._lines["stdout"][position:]
                ended = self._ended
            position += len(batch)
            yield from batch
            if ended and not batch:
                return

    # ------------------------------------------------------------------------------ control

    def write(self, data: str | bytes) -> None:
        """Write to the process's stdin (a str as UTF-8)."""
        self._session.write(data)

    def close_stdin(self) -> None:
        """Close the process's stdin (EOF). Idempotent."""
        self._session.close_stdin()

    def wait(self, timeout: float | None = None) -> CommandResult:
        """Wait until the process ends and return its result (output, exit code).

        After ``timeout`` seconds (default: ``--nf-command-timeout``)
        :class:`~pytest_northflank.errors.WaitTimeout` is raised and the process keeps running.
        """
        __tracebackhide__ = True
        limit = self.default_timeout if timeout is None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        with self._changed:
            while not self._ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    where = " (the default --nf-command-timeout)" if timeout is None else ""
                    raise WaitTimeout(
                        f"{self._describe()} did not end within {limit or 0:g}s{where}\n"
                        f"{self.tail()}",
                        timeout=limit or 0.0,
                    )
                self._changed.wait(remaining)
            return CommandResult(
                command=self.command,
                exit_code=self._exit_code,
                stdout_bytes=bytes(self._bytes["stdout"]),
                stderr_bytes=bytes(self._bytes["stderr"]),
                duration=(self._finished_at or time.monotonic()) - self.started,
                masked=self._masked,
            )

    def terminate(self) -> None:
        """Send SIGTERM to the process's group (the process and what it started)."""
        self._signal("TERM")

    def kill(self) -> None:
        """SIGKILL the process's group, and close its connection."""
        self._signal("KILL")
        self._session.abort()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds if it still runs. Never raises."""
        if self._ended:
            return
        with contextlib.suppress(NorthflankError):
            self.terminate()
        with self._changed:
            self._changed.wait_for(lambda: self._ended, timeout=grace)
        if not self._ended:
            try:
                self.kill()
            except NorthflankError:
                self._session.abort()
        self._reader.join(timeout=grace)

    def _signal(self, name: str) -> None:
        if self._ended:
            return
        if not self._pid:
            with self._changed:  # the wrapper reports its PID first thing
                self._changed.wait_for(lambda: self._pid is not None or self._ended, timeout=5.0)
        if self._pid:
            self._signal_group(self._pid, name)
        elif not self._ended:
            raise ExecError(f"cannot signal {self._describe()}: its PID is unknown")

    def _describe(self) -> str:
        return f"process {mask(self.command, self._masked)!r}"
