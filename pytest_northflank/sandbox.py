"""What a test holds: :class:`Sandbox` (a live Linux container) and :class:`CommandResult`.

(About 560 lines: the one object users hold, so every public method is here; the work behind
them lives in :mod:`.commands`, :mod:`.process`, :mod:`.waits` and the client.)
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_northflank.client.logs import chronological
from pytest_northflank.commands import OutputCallback, build_command, text_chunks
from pytest_northflank.errors import (
    ArgumentError,
    CommandTimeout,
    ExecError,
    FileTransferError,
    NetworkError,
    NorthflankError,
    NotFoundError,
    SandboxDeleted,
)
from pytest_northflank.probe import Probe, http, tcp
from pytest_northflank.process import Process, wrap_argv
from pytest_northflank.redaction import mask, secret_values
from pytest_northflank.result import FAILURE_TAIL_CHARS, FAILURE_TAIL_LINES, CommandResult
from pytest_northflank.waits import check_timeout, wait_for_probe

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient, PortSpec
    from pytest_northflank.config.settings import SandboxOptions

__all__ = [
    "FAILURE_TAIL_CHARS",
    "FAILURE_TAIL_LINES",
    "CommandRecord",
    "CommandResult",
    "OutputCallback",
    "Sandbox",
]


@dataclass(frozen=True)
class CommandRecord:
    """One thing done in a sandbox, kept for the failure report."""

    command: str
    exit_code: int | None
    duration: float
    test: str | None
    error: str | None = None


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
        default_timeout: float | None = None,
    ) -> None:
        self._client = client
        #: Seconds a command or transfer may take when the call sets no timeout (None: no
        #: limit); from --nf-command-timeout.
        self.default_timeout = default_timeout
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
        #: How each of ``failed_tests`` went wrong: "failed" (its body) or "error" (set-up or
        #: teardown); says why a kept sandbox was kept.
        self.failures: dict[str, str] = {}
        self.deleted = False
        #: When and by what it was deleted (set with ``deleted``), for the error of a later call.
        self.deleted_at: datetime | None = None
        self.deleted_by: str | None = None
        self.kept = False
        self.provisioning_seconds: float | None = None
        #: Background processes started with :meth:`start` (shown in failure reports).
        self.processes: list[Process] = []
        self._network_checked: bool | None = None
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
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        """Run a command in the sandbox and wait for it.

        A string runs through ``sh -c`` (pipes, globs, ``&&``); a list runs as argv without a
        shell. ``env`` adds environment variables, ``cwd`` sets the directory, ``input`` is
        fed to stdin. With ``check=True`` a non-zero exit raises ``CommandFailed``; after
        ``timeout`` seconds (default: ``--nf-command-timeout``, 15 minutes) the command is
        stopped and ``CommandTimeout`` raised; its ``result`` holds the output written until
        then (``exit_code`` None). ``on_output(stream, text)`` is called for each chunk of
        output as it arrives (``stream`` is ``"stdout"`` or ``"stderr"``); the result holds
        all of it anyway.

            result = sandbox.run("ls /etc | wc -l", check=True)
            sandbox.run(["python3", "-m", "pytest", "-q"], cwd="/work/project")
        """
        __tracebackhide__ = True  # its arguments (env) may hold secrets; pytest would print them
        plan = build_command(command, env=env, cwd=cwd)  # checks the command first
        self._check_not_deleted()
        if input is not None and not isinstance(input, (str, bytes, bytearray, memoryview)):
            raise ArgumentError(
                f"input must be str or bytes, got {type(input).__name__} (it is fed to stdin)"
            )
        display = command if isinstance(command, str) else shlex.join(os.fspath(c) for c in command)
        data = input.encode("utf-8") if isinstance(input, str) else input
        if plan.stdin:
            data = plan.stdin + bytes(data or b"")
        argv = plan.argv
        test = self._note_test()
        limit = self.default_timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            raw = self._client.run(
                self.project_id,
                self.id,
                argv,
                input=data,
                timeout=limit,
                on_output=None if on_output is None else text_chunks(on_output),
                description=plan.description,
                # The default limit must not need coreutils' timeout in the image.
                stop_remotely=timeout is not None,
            )
        except ArgumentError:
            raise  # refused before anything was sent (a bad timeout): nothing ran
        except CommandTimeout as error:
            duration = time.monotonic() - started
            self.history.append(
                CommandRecord(display, None, duration, test, f"timed out after {limit:g} s")
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
            message = partial_result._timeout_message(error.timeout)
            if timeout is None:  # say where a limit nobody wrote at this call came from
                message += (
                    "\n(the default --nf-command-timeout; pass timeout=... to run() for "
                    "a longer one)"
                )
            raise CommandTimeout(
                message,
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
            if isinstance(error, NorthflankError):
                gone = self._gone(error)
                if gone is not None:
                    raise gone from None
                # The traceback ends at the test's call: the client's frames help nobody.
                raise error.with_traceback(None) from None
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

    # ------------------------------------------------------------------ background and waits

    def start(
        self,
        command: str | Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> Process:
        """Start a command in the background and return its :class:`Process` at once.

        A string runs through ``sh -c``, a list as argv (as in :meth:`run`). Its output is
        collected as it arrives; processes still running at teardown are stopped before the
        sandbox is deleted.

            server = sandbox.start("python3 -m http.server 8000")
            server.wait_for_line("Serving HTTP")
        """
        __tracebackhide__ = True  # its arguments (env) may hold secrets; pytest would print them
        plan = build_command(command, env=env, cwd=cwd)
        display = command if isinstance(command, str) else shlex.join(os.fspath(c) for c in command)
        wrapped, token = wrap_argv(plan.argv)
        test = self._note_test()
        masked = secret_values(self.options.env, env)
        try:
            session = self._client.open_session(self.project_id, self.id, wrapped)
            if plan.stdin:
                session.write(plan.stdin)  # the environment, read before the command starts
        except Exception as error:
            self.history.append(CommandRecord(display, None, 0.0, test, mask(str(error), masked)))
            raise
        self.history.append(CommandRecord(display, None, 0.0, test, "started in the background"))
        process = Process(
            session,
            command=display,
            token=token,
            signal_group=self._signal_group,
            secrets=masked,
            test=test,
            default_timeout=self.default_timeout,
        )
        self.processes.append(process)
        return process

    def wait_for_port(self, port: int, *, timeout: float = 30.0) -> None:
        """Wait until something listens on TCP ``port`` inside the sandbox.

        Raises :class:`~pytest_northflank.errors.WaitTimeout` (a ``TimeoutError``) after
        ``timeout`` seconds. Needs only ``/bin/sh`` in the image.
        """
        __tracebackhide__ = True
        self.wait_until(tcp(port), timeout=timeout)

    def wait_for_http(
        self, port: int, path: str = "/", *, status: int = 200, timeout: float = 30.0
    ) -> None:
        """Wait until ``GET http://127.0.0.1:{port}{path}`` inside the sandbox answers
        ``status``. Raises :class:`~pytest_northflank.errors.WaitTimeout` naming the URL and
        the last status seen. Uses bash's ``/dev/tcp`` (else curl, wget or python3)."""
        __tracebackhide__ = True
        self.wait_until(http(port, path, status), timeout=timeout)

    def wait_until(self, ready: Probe, *, timeout: float = 30.0) -> None:
        """Wait until a readiness probe (:mod:`pytest_northflank.probe`) passes."""
        __tracebackhide__ = True
        check_timeout(timeout)
        wait_for_probe(self._run_quietly, ready, timeout=timeout, where=f"sandbox {self.name}")

    def stop_processes(self, grace: float = 2.0) -> None:
        """Stop every background process still running (SIGTERM, SIGKILL after ``grace``
        seconds), all at once; never raises."""
        running = [process for process in self.processes if process.running]
        stoppers = [
            threading.Thread(target=process.stop, args=(grace,), daemon=True) for process in running
        ]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=grace * 2 + 1)

    def _run_quietly(self, argv: Sequence[str]) -> tuple[int, str, str]:
        raw = self._client.run(self.project_id, self.id, list(argv))
        return raw.exit_code, raw.stdout_text, raw.stderr_text

    def _signal_group(self, pid: int, signal_name: str) -> None:
        # The group first (the emulator starts every exec in a session of its own); a plain
        # kill of the PID where the command is not a group leader.
        script = 'kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"'
        self._client.run(
            self.project_id, self.id, ["sh", "-c", script, "sh", signal_name, str(pid)]
        )

    # -------------------------------------------------------------------------------- files

    def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str,
        *,
        timeout: float | None = None,
    ) -> None:
        """Copy a local file or directory into the sandbox, streamed.

        A file lands at ``remote_path`` (inside it, if that is an existing directory); a
        directory's contents land in ``remote_path``. Modes, symlinks and empty directories are
        kept; the image needs ``sh`` and ``tar``. ``timeout`` defaults to
        ``--nf-command-timeout``.
        """
        __tracebackhide__ = True  # a failed copy points at the test's line
        limit = self.default_timeout if timeout is None else timeout
        self._transfer(
            f"upload {os.fspath(local_path)} -> {remote_path}",
            lambda: self._client.upload(
                self.project_id, self.id, Path(local_path), remote_path, timeout=limit
            ),
        )

    def download(
        self,
        remote_path: str,
        local_path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
    ) -> None:
        """Copy a file or directory out of the sandbox to ``local_path``, streamed.

        A file lands at ``local_path`` (inside it, if that is an existing directory); a
        directory's contents land in ``local_path``. Members that would land outside it are
        refused (``UnsafeArchiveError``). ``timeout`` defaults to ``--nf-command-timeout``.
        """
        __tracebackhide__ = True
        limit = self.default_timeout if timeout is None else timeout
        self._transfer(
            f"download {remote_path} -> {os.fspath(local_path)}",
            lambda: self._client.download(
                self.project_id, self.id, remote_path, Path(local_path), timeout=limit
            ),
        )

    def read_bytes(self, path: str) -> bytes:
        """The content of a file in the sandbox."""
        __tracebackhide__ = True
        result = self.run(["cat", "--", path])
        if not result.ok:
            raise FileTransferError(
                f"cannot read {path} in sandbox {self.name}: {result.stderr.strip()}"
            )
        return result.stdout_bytes

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The content of a text file in the sandbox."""
        __tracebackhide__ = True
        return self.read_bytes(path).decode(encoding)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to a file in the sandbox, creating its parent directories."""
        __tracebackhide__ = True
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
        __tracebackhide__ = True
        self.write_bytes(path, text.encode(encoding))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists in the sandbox (file, directory or anything else)."""
        __tracebackhide__ = True
        return self.run(["test", "-e", path]).ok

    # --------------------------------------------------------------------------------- logs

    def logs(self, lines: int = 100) -> list[str]:
        """The last ``lines`` lines the sandbox's main process wrote (stdout and stderr), oldest
        first. ``lines`` must be at least 1 (``ArgumentError`` otherwise)."""
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
            raise ArgumentError(f"lines must be a whole number of at least 1, got {lines!r}")
        self._check_not_deleted()
        fetched = self._client.fetch_logs(self.project_id, self.id, line_limit=lines)
        return [line.log for line in chronological(fetched)]

    # ----------------------------------------------------------------------------- network

    @property
    def hostname(self) -> str:
        """The name other sandboxes of the run reach this one by (its service id, on
        Northflank's private network and in the emulator's hosts files).

        Raises :class:`NetworkError` where sandboxes have no network of their own (the
        emulator without namespaces)."""
        if self._network_checked is None:
            try:
                self._client.forwarding_info(self.project_id, self.id)
            except NetworkError:
                raise  # the backend has no network (the emulator without namespaces)
            except NorthflankError:
                pass  # e.g. a token without forwarding permission: the name still holds
            self._network_checked = True
        return self.id

    def address(self, port: int) -> str:
        """``"hostname:port"``: how another sandbox connects to ``port`` of this one."""
        self._declared(port)
        return f"{self.hostname}:{port}"

    def forward(self, port: int) -> tuple[str, int]:
        """A local ``(host, port)`` whose connections reach ``port`` inside the sandbox,
        carried by Northflank's port-forwarding tunnel (any TCP protocol). The listener
        stays until the sandbox's scope ends."""
        self._declared(port)
        return self._client.forward(self.project_id, self.id, port)

    def url(self, port: int, path: str = "/") -> str:
        """A URL for ``port`` the test can use as it is: the public ``https://`` name of a
        public HTTP port on Northflank (``http://127.0.0.1:N`` on the emulator), otherwise
        ``http://`` on a local :meth:`forward`."""
        if not path.startswith("/"):
            raise ArgumentError(f"path must start with '/', got {path!r}")
        declared = self._declared(port)
        if declared.protocol == "UDP":
            raise ArgumentError(f"port {port} is UDP: url() needs an HTTP or TCP port")
        if declared.public:
            service = self._client.get_service(self.project_id, self.id)
            dns = next((p.dns for p in service.ports if p.internal_port == port and p.dns), None)
            if dns is not None:
                host = dns.rsplit(":", 1)[0]
                scheme = "http" if host in ("127.0.0.1", "localhost", "[::1]") else "https"
                return f"{scheme}://{dns}{path}"
        host, local_port = self.forward(port)
        return f"http://{host}:{local_port}{path}"

    def _declared(self, port: int) -> PortSpec:
        if isinstance(port, bool) or not isinstance(port, int):
            raise ArgumentError(f"port must be a whole number, got {port!r}")
        for declared in self.options.ports:
            if declared.port == port:
                return declared
        listed = ", ".join(str(p.port) for p in self.options.ports) or "none"
        raise NetworkError(
            f"port {port} is not a port of sandbox {self.name} (its ports: {listed}); declare "
            f"it with ports=[{port}] on the marker or the factory, or --nf-port {port}"
        )

    # ------------------------------------------------------------------------------ delete

    def delete(self) -> None:
        """Delete the sandbox now instead of at the end of its scope (idempotent)."""
        if self._deleter is None:
            raise NorthflankError(f"sandbox {self.name} was not made by a provisioner")
        if self.deleted:
            return
        self._deleter(self)
        if self.deleted:
            self.deleted_by = f"sandbox.delete() in {self._current_test() or 'a fixture'}"

    def note_failure(self, test: str, how: str) -> None:
        """Record that ``test`` (which used this sandbox) failed; ``how``: failed or error."""
        if test not in self.failed_tests:
            self.failed_tests.append(test)
        self.failures.setdefault(test, how)

    def mark_deleted(self, by: str) -> None:
        """Record that the service is gone, when, and by what (named in later errors)."""
        self.deleted = True
        self.deleted_at = datetime.now(timezone.utc)
        self.deleted_by = by

    # ----------------------------------------------------------------------------- helpers

    def _note_test(self) -> str | None:
        test = self._current_test()
        if test is not None and test not in self.tests:
            self.tests.append(test)
        return test

    def _check_not_deleted(self) -> None:
        __tracebackhide__ = True
        if not self.deleted:
            return
        when = self.deleted_at.strftime("%H:%M:%S UTC") if self.deleted_at else "an earlier time"
        raise SandboxDeleted(
            f"sandbox {self.name} was deleted at {when} (by {self.deleted_by or 'this run'}); "
            "it can no longer run commands or move files"
        )

    def _gone(self, error: NorthflankError) -> SandboxDeleted | None:
        """After a failed call: a SandboxDeleted when the API no longer knows the service
        (deleted from outside this test), else None (one lookup, only on errors)."""
        if not isinstance(error, (NotFoundError, ExecError)):
            return None
        try:
            self._client.get_service(self.project_id, self.id)
        except NotFoundError:
            pass
        except NorthflankError:
            return None  # cannot tell; the original error stands
        else:
            return None
        self.mark_deleted("something outside this test: another process, a reaper or a person")
        return SandboxDeleted(
            f"sandbox {self.name} (service {self.id}) no longer exists: it was deleted before "
            f"{self.deleted_at:%H:%M:%S UTC} (by {self.deleted_by}); the API said: {error}"
        )

    def _transfer(self, what: str, action: Callable[[], object]) -> None:
        __tracebackhide__ = True  # the client's frames say nothing a user can act on
        self._check_not_deleted()
        test = self._note_test()
        started = time.monotonic()
        try:
            action()
        except NorthflankError as error:
            self.history.append(
                CommandRecord(what, None, time.monotonic() - started, test, str(error))
            )
            gone = self._gone(error)
            if gone is not None:
                raise gone from None
            # Re-raised from here: the traceback ends at the test's call, not in the client.
            raise error.with_traceback(None) from None
        except Exception as error:
            self.history.append(
                CommandRecord(what, None, time.monotonic() - started, test, str(error))
            )
            raise
        self.history.append(CommandRecord(what, 0, time.monotonic() - started, test))
