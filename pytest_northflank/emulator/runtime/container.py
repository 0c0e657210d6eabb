"""One running sandbox of the emulator: its main process, exec'd commands, logs, limits and
network, and their teardown. (About 590 lines: every path that starts or stops a process in the
sandbox shares this object's lock and state.)"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pytest_northflank.emulator.runtime.devices import open_sandbox_pty
from pytest_northflank.emulator.runtime.exec_helper import MAX_REQUEST, ExecHelper
from pytest_northflank.emulator.runtime.exec_process import (
    ExecProcess,
    Stream,
    exit_code_of,
    set_window_size,
)
from pytest_northflank.emulator.runtime.in_sandbox import kill_marked_processes
from pytest_northflank.emulator.runtime.limits import SandboxGroup
from pytest_northflank.emulator.runtime.network import Attachment
from pytest_northflank.emulator.runtime.spawn_thread import Spawner
from pytest_northflank.emulator.runtime.start_in_sandbox import (
    launch_error,
    popen_launcher,
    read_report_async,
    spec_pipe,
    terminate_launcher,
)
from pytest_northflank.emulator.runtime.validate import (
    check_argv,
    check_env,
    check_window,
    map_paths_inside,
    mapped_top_directories,
)
from pytest_northflank.errors import EmulatorError

IsolationMode = Literal["namespace", "directory"]

MAX_LINE_BYTES = 16 * 1024  # a longer line is split: the log is bounded by lines *and* bytes


@dataclass(frozen=True)
class LogRecord:
    """One line of a sandbox's main process output (without its line break)."""

    ts: datetime  #: when the line was read (UTC, timezone-aware)
    stream: Literal["stdout", "stderr"]
    text: str  #: decoded as UTF-8; undecodable bytes become U+FFFD
    index: int = 0  #: position in the container's log since it started (0-based)


class Container:
    """A sandbox: its main process and everything started in it by :meth:`exec`.

    Created by :meth:`ContainerRuntime.start`. Methods are thread-safe except :meth:`exec`,
    whose :class:`ExecProcess` belongs to the event loop that awaited it.
    """

    def __init__(
        self,
        *,
        sandbox_id: str,
        isolation: IsolationMode,
        env: dict[str, str],
        workdir: str,
        directory: Path,
        hostname: str,
        main: subprocess.Popen[bytes],
        pid: int,
        stdout_fd: int,
        stderr_fd: int,
        spawner: Spawner,
        max_log_lines: int,
        on_stopped: Callable[[Container], None],
        user: tuple[int, int] | None = None,
        limits_spec: Mapping[str, Any] | None = None,
        group: SandboxGroup | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.isolation: IsolationMode = isolation
        self.env = env  #: the environment every process in the sandbox starts with
        self.workdir = workdir  #: working directory of the main process and of every exec
        self.directory = directory  #: the sandbox's directory on the host (removed on stop)
        self.hostname = hostname
        self.user = user  #: (uid, gid) of every process, from the image's User; None: root
        #: its place on the emulator's private network (namespace mode), set by the runtime
        self.network: Attachment | None = None
        self.pid = pid  #: host PID of the main process (PID 1 of the sandbox in namespace mode)
        #: directory mode: env entries that identify this sandbox's processes (for the sweep)
        self.markers = directory_markers(directory) if isolation == "directory" else []
        #: launcher spec entries that put every process of the sandbox under its limits
        self.limits_spec = dict(limits_spec or {})
        self._group = group
        self._main = main
        self._spawner = spawner
        self._on_stopped = on_stopped
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self._execs: set[ExecProcess] = set()
        self._helper: ExecHelper | None = None
        self._helper_failed = False
        self._helper_start = threading.Lock()
        self._pidfd: int | None = None
        if isolation == "namespace":
            # PID 1 may have ended already; exec then says the sandbox is not running.
            with contextlib.suppress(ProcessLookupError):
                self._pidfd = os.pidfd_open(pid)
        self._log: collections.deque[LogRecord] = collections.deque(maxlen=max_log_lines)
        self._log_total = 0
        self._log_lock = threading.Lock()
        self._stdout_fd = stdout_fd
        self._stderr_fd = stderr_fd
        self._wake_read, self._wake_write = os.pipe()
        self._log_thread = threading.Thread(
            target=self._pump_logs, name=f"nf-emulator-logs-{sandbox_id}", daemon=True
        )
        self._log_thread.start()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self.exit_code()}"
        return f"<Container {self.sandbox_id!r} {self.isolation} pid={self.pid} {state}>"

    # -- state -----------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True while the main process is alive."""
        return self._main.poll() is None

    def exit_code(self) -> int | None:
        """The main process's exit code once it ended (128+N when killed by signal N)."""
        code = self._main.poll()
        return None if code is None else exit_code_of(code)

    def log_lines(self, start: int = 0) -> list[LogRecord]:
        """Main process output lines with ``index >= start``, oldest first.

        Only the newest lines are kept (10,000 by default); asking for older ones returns
        what is left, so a follower should continue from ``lines[-1].index + 1``.
        """
        with self._log_lock:
            first_kept = self._log_total - len(self._log)
            skip = max(start - first_kept, 0)
            return list(itertools.islice(self._log, skip, None))

    # -- exec ------------------------------------------------------------------------------

    def private_root(self) -> Path:
        """Directory isolation: where absolute paths outside the sandbox's directory land
        (``/etc/x`` is ``<root>/etc/x``); made on first use, removed with the sandbox."""
        root = self.directory / "root"
        if self.directory.is_dir() and not root.is_dir():  # a stopped sandbox's is gone
            root.mkdir()
            for name in mapped_top_directories():
                (root / name).mkdir(mode=0o755)
        return root

    async def exec(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        rows: int = 24,
        columns: int = 80,
    ) -> ExecProcess:
        """Start ``argv`` inside the sandbox and return once it runs (exec succeeded).

        It gets the sandbox's namespaces (or directory), the container environment updated
        with ``env`` (plus ``TERM=xterm`` with ``tty`` unless given), cwd :attr:`workdir`, its
        own session, and with ``tty`` a pseudo-terminal of ``rows`` x ``columns`` as its
        controlling terminal.

        Raises :class:`CommandNotFound` (exit code 127) or :class:`CommandNotExecutable` (126)
        when ``argv[0]`` cannot be executed; nothing runs then and nothing is printed, so a
        caller that wants shell behaviour prints ``f"{error}\\n"`` to stderr and reports
        ``error.exit_code``. Raises :class:`EmulatorError` when the sandbox is not running.
        """
        argv = check_argv(argv, "exec argv")
        if self.isolation == "directory":  # its commands run on the host's file system
            argv = map_paths_inside(argv, str(self.directory), str(self.private_root()))
        extra_env = check_env(env, "exec env")
        if tty:
            check_window(rows, columns)
        full_env = {**self.env, **extra_env}
        if tty:
            full_env.setdefault("TERM", "xterm")
        spec: dict[str, Any] = {
            "action": "exec",
            "isolation": self.isolation,
            "argv": argv,
            "env": full_env,
            "workdir": self.workdir,
            "tty": tty,
            **self.limits_spec,
        }
        if self.user is not None:
            spec["uid"], spec["gid"] = self.user
        helper = await self._exec_helper()
        if helper is not None and len(json.dumps(spec)) <= MAX_REQUEST:
            return await self._exec_in_helper(helper, spec, rows, columns)
        handed_over: list[int] = []  # child-side fds: closed by the spawn job once it ran
        kept: list[int] = []  # our side: owned by the ExecProcess once it exists
        output_fds: dict[int, Stream]
        try:
            target_pidfd = self._claim_target()
            if target_pidfd is not None:
                handed_over.append(target_pidfd)
                spec["target_pidfd"] = target_pidfd
                spec["target_pid"] = self.pid
            spec_fd = spec_pipe(spec)
            handed_over.append(spec_fd)
            report_read, report_write = os.pipe()
            kept.append(report_read)
            handed_over.append(report_write)
            if tty:
                master, slave = self._open_pty()
                kept.append(master)
                handed_over.append(slave)
                set_window_size(slave, rows, columns)
                stdio = (slave, slave, slave)
                stdin_fd, output_fds = master, {master: "stdout"}
            else:
                in_read, in_write = os.pipe()
                out_read, out_write = os.pipe()
                err_read, err_write = os.pipe()
                kept += [in_write, out_read, err_read]
                handed_over += [in_read, out_write, err_write]
                stdio = (in_read, out_write, err_write)
                stdin_fd, output_fds = in_write, {out_read: "stdout", err_read: "stderr"}
        except BaseException:
            for fd in handed_over + kept:
                os.close(fd)
            raise
        pass_fds = tuple(fd for fd in handed_over if fd not in stdio)

        def start_launcher() -> subprocess.Popen[bytes]:
            return popen_launcher(
                spec_fd, report_write, stdio=stdio, pass_fds=pass_fds, handed_over=handed_over
            )

        try:
            future = self._spawner.submit(start_launcher)
        except BaseException:
            for fd in handed_over + kept:
                os.close(fd)
            raise
        try:
            launcher = await _await_spawn(future)
        except BaseException:
            for fd in kept:
                os.close(fd)
            raise
        process = ExecProcess(
            launcher,
            stdin_fd=stdin_fd,
            output_fds=output_fds,
            tty=tty,
            on_exit=self._forget_exec,
        )
        try:
            with self._lock:
                if self._stopping:
                    raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running")
                self._execs.add(process)
            os.set_blocking(report_read, False)
            report = await read_report_async(report_read)
        except BaseException:
            process._abandon()
            raise
        finally:
            os.close(report_read)
        if report is None or "error" in report:
            process._abandon()
            raise launch_error(
                report, launcher, sandbox_id=self.sandbox_id, argv0=argv[0], what="a command"
            )
        process.pid = report["pid"]
        return process

    async def _exec_in_helper(
        self, helper: ExecHelper, spec: dict[str, Any], rows: int, columns: int
    ) -> ExecProcess:
        """Start the command through the sandbox's exec helper (a fork, no new launcher)."""
        ours, theirs, stdio, stdin_fd, output_fds = self._stdio(spec["tty"], rows, columns)
        try:
            report = await helper.spawn(spec, stdio)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        if "pid" not in report:
            for fd in ours:
                os.close(fd)
            if not report:
                raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running")
            raise launch_error(
                report, helper.process, sandbox_id=self.sandbox_id, argv0=spec["argv"][0],
                what="a command",
            )  # fmt: skip
        process = ExecProcess(
            report["child"],
            stdin_fd=stdin_fd,
            output_fds=output_fds,
            tty=spec["tty"],
            on_exit=self._forget_exec,
        )
        process.pid = report["pid"]
        with self._lock:
            stopping = self._stopping
            if not stopping:
                self._execs.add(process)
        if stopping:
            process._abandon()
            raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running")
        return process

    def _stdio(
        self, tty: bool, rows: int, columns: int
    ) -> tuple[list[int], list[int], tuple[int, int, int], int, dict[int, Stream]]:
        """Pipes (or a terminal) for one command: our fds, the command's fds, its stdin,
        stdout and stderr, our end of its stdin, and our output fds by stream."""
        if tty:
            master, slave = self._open_pty()
            set_window_size(slave, rows, columns)
            return [master], [slave], (slave, slave, slave), master, {master: "stdout"}
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        return (
            [in_write, out_read, err_read],
            [in_read, out_write, err_write],
            (in_read, out_write, err_write),
            in_write,
            {out_read: "stdout", err_read: "stderr"},
        )

    async def _exec_helper(self) -> ExecHelper | None:
        """The sandbox's exec helper, started at the first exec; None if it cannot run here
        (every exec then starts a launcher of its own)."""
        with self._lock:
            if self._stopping:
                raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running")
            if self._helper is not None and self._helper.alive:
                return self._helper
            if self._helper_failed:
                return None
        return await asyncio.to_thread(self._start_helper)

    def _start_helper(self) -> ExecHelper | None:
        with self._helper_start:
            if self._helper is not None and self._helper.alive:
                return self._helper
            if self._helper_failed:
                return None
            spec: dict[str, Any] = {
                "isolation": self.isolation,
                "workdir": self.workdir,
                **self.limits_spec,
            }
            target_pidfd = self._claim_target()
            handed = [] if target_pidfd is None else [target_pidfd]
            if target_pidfd is not None:
                spec.update(target_pidfd=target_pidfd, target_pid=self.pid)
            try:
                helper = ExecHelper(self._spawner, spec, handed)
            except EmulatorError:
                if not self.is_running():
                    raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running") from None
                self._helper_failed = True
                return None
            with self._lock:
                stopping = self._stopping
                if not stopping:
                    self._helper = helper
            if stopping:
                helper.close()
                raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running")
            return helper

    def _claim_target(self) -> int | None:
        """Check the sandbox runs; in namespace mode return a private copy of PID 1's pidfd."""
        with self._lock:
            if self.isolation == "directory" and not self._stopping and self.is_running():
                return None
            if self._pidfd is None or self._stopping or not self.is_running():
                raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running")
            return os.dup(self._pidfd)

    def _open_pty(self) -> tuple[int, int]:
        if self.isolation == "directory":
            return os.openpty()
        try:
            return open_sandbox_pty(self.pid)
        except OSError as exc:
            if self.is_running():
                raise EmulatorError(
                    f"could not open a terminal in sandbox {self.sandbox_id!r}: {exc}"
                ) from exc
            raise EmulatorError(f"sandbox {self.sandbox_id!r} is not running") from None

    def _forget_exec(self, process: ExecProcess) -> None:
        with self._lock:
            self._execs.discard(process)

    # -- stop ------------------------------------------------------------------------------

    def stop(self, grace: float = 2.0) -> None:
        """Stop the sandbox: SIGTERM, then SIGKILL after ``grace`` seconds; idempotent.

        Every process of the sandbox is dead when this returns, its overlay and tmpfs are
        gone and its host directory is removed. A PID 1 that installed no SIGTERM handler
        cannot receive SIGTERM from outside its namespace, so it is killed without waiting.
        """
        if self._begin_stop():
            self._finish_stop(time.monotonic() + max(grace, 0.0))
        else:
            self._stopped.wait()

    def _begin_stop(self) -> bool:
        """Send SIGTERM; False if another caller is already stopping this container."""
        with self._lock:
            if self._stopping:
                return False
            self._stopping = True
        if self._main.poll() is None and self._sigterm_can_land():
            with contextlib.suppress(ProcessLookupError):
                self._main.send_signal(signal.SIGTERM)  # the launcher forwards it
        return True

    def _finish_stop(self, deadline: float) -> None:
        try:
            if self._main.poll() is None and self._sigterm_can_land():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._main.wait(max(deadline - time.monotonic(), 0.0))
            terminate_launcher(self._main)
            with self._lock:
                execs = list(self._execs)
            for process in execs:
                # Namespace mode: already dead with PID 1. Directory mode: kill its group.
                terminate_launcher(process._launcher)
            with self._lock:
                helper, self._helper = self._helper, None
            if helper is not None:
                helper.close()
            if self.isolation == "directory":
                kill_marked_processes(self.markers)
            self._close_logs()
            with self._lock:
                if self._pidfd is not None:
                    os.close(self._pidfd)
                    self._pidfd = None
            try:
                if self._group is not None:
                    self._group.release()  # also kills what escaped the process groups
            finally:
                _remove_tree(self.directory)
        finally:
            self._stopped.set()
            self._on_stopped(self)

    def _sigterm_can_land(self) -> bool:
        if self.isolation != "namespace":
            return True
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return False
        for line in status.splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
        return False

    # -- logs ------------------------------------------------------------------------------

    def _pump_logs(self) -> None:
        partial: dict[Stream, bytes] = {"stdout": b"", "stderr": b""}
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdout_fd, selectors.EVENT_READ, "stdout")
            selector.register(self._stderr_fd, selectors.EVENT_READ, "stderr")
            selector.register(self._wake_read, selectors.EVENT_READ, None)
            open_streams = 2
            while open_streams:
                for key, _ in selector.select():
                    stream: Stream | None = key.data
                    if stream is None:  # stop(): read what is buffered, then finish
                        partial["stdout"] = self._drain(
                            self._stdout_fd, "stdout", partial["stdout"]
                        )
                        partial["stderr"] = self._drain(
                            self._stderr_fd, "stderr", partial["stderr"]
                        )
                        open_streams = 0
                        break
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        partial[stream] = self._add_output(stream, partial[stream] + chunk)
                    else:
                        selector.unregister(key.fd)
                        open_streams -= 1
        for name, rest in partial.items():
            if rest:
                self._append_lines(name, [rest])

    def _drain(self, fd: int, stream: Stream, pending: bytes) -> bytes:
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                return pending
            if not chunk:
                return pending
            pending = self._add_output(stream, pending + chunk)

    def _add_output(self, stream: Stream, data: bytes) -> bytes:
        """Log the complete lines in ``data``; return the unfinished rest."""
        *lines, rest = data.split(b"\n")
        while len(rest) > MAX_LINE_BYTES:
            lines.append(rest[:MAX_LINE_BYTES])
            rest = rest[MAX_LINE_BYTES:]
        if lines:
            self._append_lines(stream, lines)
        return rest

    def _append_lines(self, stream: Stream, lines: list[bytes]) -> None:
        now = datetime.now(timezone.utc)
        with self._log_lock:
            for raw in lines:
                for offset in range(0, max(len(raw), 1), MAX_LINE_BYTES):
                    text = raw[offset : offset + MAX_LINE_BYTES].decode("utf-8", "replace")
                    self._log.append(
                        LogRecord(now, stream, text.removesuffix("\r"), self._log_total)
                    )
                    self._log_total += 1

    def _close_logs(self) -> None:
        self._log_thread.join(timeout=1.0)
        if self._log_thread.is_alive():
            # Something outside our reach still holds the pipes open: stop reading anyway.
            os.write(self._wake_write, b"x")
            self._log_thread.join()
        for fd in (self._stdout_fd, self._stderr_fd, self._wake_read, self._wake_write):
            os.close(fd)


def directory_markers(directory: Path) -> list[str]:
    return [f"HOME={directory}/home", f"TMPDIR={directory}/tmp"]


async def _await_spawn(future: Future[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    try:
        return await asyncio.shield(asyncio.wrap_future(future))
    except asyncio.CancelledError:
        # The launcher starts anyway (the spawn job cannot be interrupted): kill and reap it.
        future.add_done_callback(_reap_abandoned)
        raise


def _reap_abandoned(future: Future[subprocess.Popen[bytes]]) -> None:
    if not future.cancelled() and future.exception() is None:
        terminate_launcher(future.result())


def _remove_tree(path: Path) -> None:
    try:
        try:
            shutil.rmtree(path)
        except PermissionError:
            # A sandbox (directory mode, not root) may have left read-only directories.
            for parent, _, _ in os.walk(path):
                os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
            shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise EmulatorError(f"could not remove the sandbox directory {path}: {exc}") from exc
