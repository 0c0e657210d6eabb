"""What a test holds: :class:`Sandbox` (a live Linux container) and :class:`CommandResult`."""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_northflank.client.arguments import check_command_text, check_no_nul
from pytest_northflank.errors import (
    ArgumentError,
    CommandFailed,
    CommandTimeout,
    FileTransferError,
    NorthflankError,
)
from pytest_northflank.redaction import mask, secret_values

if TYPE_CHECKING:
    from pytest_northflank.client import LogLine, NorthflankClient
    from pytest_northflank.config.settings import SandboxOptions

__all__ = ["CommandRecord", "CommandResult", "Sandbox"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# How much of the output a failed check() or a timeout shows.
FAILURE_TAIL_LINES = 20
FAILURE_TAIL_CHARS = 4000
# cwd is applied inside the sandbox by a tiny shell program that gets the directory and the
# command as positional arguments, so no quoting of user text is ever needed.
_CD_AND_EXEC = 'cd -- "$1" && shift && exec "$@"'
_EXEC = 'exec "$@"'


def _tail(text: str, secrets: Sequence[str]) -> str:
    """The end of ``text`` for a message, masked before it is cut so that no cut can leave
    part of a secret showing."""
    kept = "\n".join(mask(text, secrets).rstrip("\n").splitlines()[-FAILURE_TAIL_LINES:])
    if len(kept) > FAILURE_TAIL_CHARS:
        kept = "..." + kept[-FAILURE_TAIL_CHARS:]
    return kept


@dataclass(frozen=True)
class CommandResult:
    """What a command did: exit code, output (text and bytes) and how long it took.

    ``exit_code`` is None only in the ``result`` of a :class:`CommandTimeout`: the command was
    stopped before it finished, and the output is what it wrote until then.
    """

    command: str
    exit_code: int | None
    stdout_bytes: bytes
    stderr_bytes: bytes
    duration: float
    sandbox: str = ""
    #: Values masked in the message of ``check()`` (secret-looking environment values).
    masked: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def stdout(self) -> str:
        """Standard output as text (UTF-8; undecodable bytes become U+FFFD)."""
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        """Standard error as text (UTF-8; undecodable bytes become U+FFFD)."""
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        """True when the exit code is 0 (False for a command that did not finish)."""
        return self.exit_code == 0

    def check(self) -> CommandResult:
        """Return self when the command succeeded, else raise :class:`CommandFailed`.

        The error shows the command, the exit code and the end of stderr (or of stdout when
        stderr is empty).
        """
        __tracebackhide__ = True  # the failure points at the test's line, not at this one
        if self.ok:
            return self
        where = f" in sandbox {self.sandbox}" if self.sandbox else ""
        ended = "did not finish" if self.exit_code is None else f"exited with {self.exit_code}"
        message = f"command {self.command!r} {ended}{where}"
        stream, text = ("stderr", self.stderr) if self.stderr.strip() else ("stdout", self.stdout)
        if text.strip():
            message += f"\n--- end of {stream} ---\n{_tail(text, self.masked)}"
        else:
            message += " (no output)"
        raise CommandFailed(mask(message, self.masked), result=self)

    def _timeout_message(self, timeout: float) -> str:
        """The message of the ``CommandTimeout`` this partial result goes with: the command as
        written, the limit, and the end of whatever it wrote on each stream."""
        where = f" in sandbox {self.sandbox}" if self.sandbox else ""
        message = f"command {self.command!r} timed out after {timeout:g}s and was stopped{where}"
        tails = [
            f"\n--- end of {stream} (partial) ---\n{_tail(text, self.masked)}"
            for stream, text in (("stdout", self.stdout), ("stderr", self.stderr))
            if text.strip()
        ]
        message += "".join(tails) if tails else " (no output)"
        return mask(message, self.masked)

    def __repr__(self) -> str:
        return (
            f"CommandResult(command={self.command!r}, exit_code={self.exit_code}, "
            f"stdout={len(self.stdout_bytes)} bytes, stderr={len(self.stderr_bytes)} bytes, "
            f"duration={self.duration:.3f})"
        )


@dataclass(frozen=True)
class CommandRecord:
    """One thing done in a sandbox, kept for the failure report."""

    command: str
    exit_code: int | None
    duration: float
    test: str | None
    error: str | None = None


def build_argv(
    command: str | Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The argv that runs ``command`` (a string through ``sh -c``, a list as is) with ``env``
    and ``cwd`` applied inside the sandbox. Every user value stays one argv element."""
    if isinstance(command, (bytes, bytearray)):
        raise TypeError("the command must be a str or a list of str, not bytes")
    if isinstance(command, str):
        check_command_text(command)
        argv = ["sh", "-c", command]
    else:
        for part in command:
            if not isinstance(part, (str, os.PathLike)):
                raise TypeError(f"command items must be str or path-like, got {part!r}")
        argv = [os.fspath(part) for part in command]
        if not argv:
            raise ArgumentError("the command is an empty list")
        check_no_nul(argv)
    if cwd is not None:
        argv = ["sh", "-c", _CD_AND_EXEC, "sh", os.fspath(cwd), *argv]
    if cwd is not None and "\0" in os.fspath(cwd):
        raise ArgumentError("cwd contains a NUL character")
    if env:
        for name, value in env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ArgumentError(f"{name!r} is not an environment variable name")
            if not isinstance(value, str):
                raise TypeError(f"the value of {name} must be a str, got {type(value).__name__}")
            if "\0" in value:
                raise ArgumentError(f"the value of {name} contains a NUL character")
        if "=" in argv[0]:
            # env would read "A=B" as another assignment, not as the program.
            argv = ["sh", "-c", _EXEC, "sh", *argv]
        argv = ["env", *(f"{name}={value}" for name, value in env.items()), *argv]
    return argv


def chronological(lines: list[LogLine]) -> list[LogLine]:
    """Log lines oldest first, whichever way the API ordered them (stable for equal times)."""
    if lines and all(line.ts is not None for line in lines):
        return sorted(lines, key=lambda line: line.ts or _EPOCH)
    return lines


class Sandbox:
    """A live Linux container (a Northflank deployment service) a test can use.

    Made by the ``nf_sandbox`` fixtures; run commands with :meth:`run`, move files with
    :meth:`upload`, :meth:`download`, :meth:`read_text`, :meth:`write_text` and friends.
    Relative paths inside the sandbox are relative to its working directory.
    """

    def __init__(
        self,
        client: NorthflankClient,
        *,
        project_id: str,
        service_id: str,
        name: str,
        options: SandboxOptions,
        dashboard_url: str,
        current_test: Callable[[], str | None] = lambda: None,
        deleter: Callable[[Sandbox], object] | None = None,
    ) -> None:
        self._client = client
        self._current_test = current_test
        self._deleter = deleter
        self.id = service_id
        self.name = name
        self.project_id = project_id
        self.options = options
        self.dashboard_url = dashboard_url
        #: Everything run in this sandbox, in order (shown in failure reports).
        self.history: list[CommandRecord] = []
        #: Tests that used this sandbox, and those of them that failed.
        self.tests: list[str] = []
        self.failed_tests: list[str] = []
        self.deleted = False
        self.kept = False
        self.provisioning_seconds: float | None = None
        self._note_test()

    @property
    def image(self) -> str:
        return self.options.image

    @property
    def plan(self) -> str:
        return self.options.plan

    def __repr__(self) -> str:
        return f"Sandbox(name={self.name!r}, id={self.id!r}, project={self.project_id!r})"

    # ---------------------------------------------------------------------------------- run

    def run(
        self,
        command: str | Sequence[str | os.PathLike[str]],
        *,
        check: bool = False,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        input: str | bytes | None = None,  # same name as in subprocess.run
    ) -> CommandResult:
        """Run a command in the sandbox and wait for it.

        A string runs through ``sh -c`` (pipes, globs, ``&&``); a list runs as argv without a
        shell. ``env`` adds environment variables, ``cwd`` sets the directory, ``input`` is
        fed to stdin. With ``check=True`` a non-zero exit raises ``CommandFailed``; after
        ``timeout`` seconds the command is stopped and ``CommandTimeout`` raised; its
        ``result`` holds the output written until then (``exit_code`` None).

            result = sandbox.run("ls /etc | wc -l", check=True)
            sandbox.run(["python3", "-m", "pytest", "-q"], cwd="/work/project")
        """
        __tracebackhide__ = True  # its arguments (env) may hold secrets; pytest would print them
        argv = build_argv(command, env=env, cwd=cwd)  # checks the command first
        if input is not None and not isinstance(input, (str, bytes, bytearray, memoryview)):
            raise ArgumentError(
                f"input must be str or bytes, got {type(input).__name__} (it is fed to stdin)"
            )
        display = command if isinstance(command, str) else shlex.join(os.fspath(c) for c in command)
        data = input.encode("utf-8") if isinstance(input, str) else input
        test = self._note_test()
        started = time.monotonic()
        try:
            raw = self._client.run(self.project_id, self.id, argv, input=data, timeout=timeout)
        except ArgumentError:
            raise  # refused before anything was sent (a bad timeout): nothing ran
        except CommandTimeout as error:
            duration = time.monotonic() - started
            self.history.append(
                CommandRecord(display, None, duration, test, f"timed out after {timeout} s")
            )
            partial = error.result
            partial_result = CommandResult(
                command=display,
                exit_code=None,
                stdout_bytes=partial.stdout if partial is not None else b"",
                stderr_bytes=partial.stderr if partial is not None else b"",
                duration=duration,
                sandbox=self.name,
                masked=secret_values(self.options.env, env),
            )
            raise CommandTimeout(
                partial_result._timeout_message(error.timeout),
                timeout=error.timeout,
                result=partial_result,
            ) from None
        except Exception as error:
            self.history.append(
                CommandRecord(
                    display,
                    None,
                    time.monotonic() - started,
                    test,
                    mask(str(error), secret_values(self.options.env, env)),
                )
            )
            raise
        duration = time.monotonic() - started
        self.history.append(CommandRecord(display, raw.exit_code, duration, test))
        result = CommandResult(
            command=display,
            exit_code=raw.exit_code,
            stdout_bytes=raw.stdout,
            stderr_bytes=raw.stderr,
            duration=duration,
            sandbox=self.name,
            masked=secret_values(self.options.env, env),
        )
        return result.check() if check else result

    # -------------------------------------------------------------------------------- files

    def upload(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        """Copy a local file or directory into the sandbox, streamed.

        A file lands at ``remote_path`` (inside it, if that is an existing directory); a
        directory's contents land in ``remote_path``. Modes, symlinks and empty directories are
        kept; the image needs ``sh`` and ``tar``.
        """
        self._transfer(
            f"upload {os.fspath(local_path)} -> {remote_path}",
            lambda: self._client.upload(self.project_id, self.id, Path(local_path), remote_path),
        )

    def download(self, remote_path: str, local_path: str | os.PathLike[str]) -> None:
        """Copy a file or directory out of the sandbox to ``local_path``, streamed.

        A file lands at ``local_path`` (inside it, if that is an existing directory); a
        directory's contents land in ``local_path``. Members that would land outside it are
        refused (``UnsafeArchiveError``).
        """
        self._transfer(
            f"download {remote_path} -> {os.fspath(local_path)}",
            lambda: self._client.download(self.project_id, self.id, remote_path, Path(local_path)),
        )

    def read_bytes(self, path: str) -> bytes:
        """The content of a file in the sandbox."""
        result = self.run(["cat", "--", path])
        if not result.ok:
            raise FileTransferError(
                f"cannot read {path} in sandbox {self.name}: {result.stderr.strip()}"
            )
        return result.stdout_bytes

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The content of a text file in the sandbox."""
        return self.read_bytes(path).decode(encoding)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to a file in the sandbox, creating its parent directories."""
        result = self.run(
            ["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"', "sh", path],
            input=data,
        )
        if not result.ok:
            raise FileTransferError(
                f"cannot write {path} in sandbox {self.name}: {result.stderr.strip()}"
            )

    def write_text(self, path: str, text: str, encoding: str = "utf-8") -> None:
        """Write ``text`` to a file in the sandbox, creating its parent directories."""
        self.write_bytes(path, text.encode(encoding))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists in the sandbox (file, directory or anything else)."""
        return self.run(["test", "-e", path]).ok

    # --------------------------------------------------------------------------------- logs

    def logs(self, lines: int = 100) -> list[str]:
        """The last ``lines`` lines the sandbox's main process wrote (stdout and stderr), oldest
        first. ``lines`` must be at least 1 (``ArgumentError`` otherwise)."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
            raise ArgumentError(f"lines must be a whole number of at least 1, got {lines!r}")
        fetched = self._client.fetch_logs(self.project_id, self.id, line_limit=lines)
        return [line.log for line in chronological(fetched)]

    # ------------------------------------------------------------------------------ delete

    def delete(self) -> None:
        """Delete the sandbox now instead of at the end of its scope (idempotent)."""
        if self._deleter is None:
            raise NorthflankError(f"sandbox {self.name} was not made by a provisioner")
        self._deleter(self)

    # ----------------------------------------------------------------------------- helpers

    def _note_test(self) -> str | None:
        test = self._current_test()
        if test is not None and test not in self.tests:
            self.tests.append(test)
        return test

    def _transfer(self, what: str, action: Callable[[], object]) -> None:
        test = self._note_test()
        started = time.monotonic()
        try:
            action()
        except Exception as error:
            self.history.append(
                CommandRecord(what, None, time.monotonic() - started, test, str(error))
            )
            raise
        self.history.append(CommandRecord(what, 0, time.monotonic() - started, test))
