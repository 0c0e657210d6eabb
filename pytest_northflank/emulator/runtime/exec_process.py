from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import termios
from collections.abc import AsyncIterator, Callable
from typing import Literal

from pytest_northflank.emulator.runtime.exec_helper import HelperChild
from pytest_northflank.emulator.runtime.start_in_sandbox import (
    KILL_SIGNAL,
    Launched,
    terminate_launcher,
)
from pytest_northflank.emulator.runtime.validate import check_window

Stream = Literal["stdout", "stderr"]
CHUNK_SIZE = 32 * 1024
# What a terminal sends for Ctrl-D: end of input for a program reading the tty (canonical mode).
TTY_EOF = b"\x04"


def set_window_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def exit_code_of(returncode: int) -> int:
    """Launchers already map "killed by N" to 128+N; a launcher killed itself maps the same."""
    return returncode if returncode >= 0 else 128 - returncode


class ExecProcess:
    """A command running inside a sandbox, started by :meth:`Container.exec`.

    Use it from the event loop that created it. Read :meth:`output` to the end (or call
    :meth:`close`) so its pipes are released; ``stdin`` is closed automatically once the command
    has exited.
    """

    def __init__(
        self,
        launcher: Launched,
        *,
        stdin_fd: int,
        output_fds: dict[int, Stream],
        tty: bool,
        on_exit: Callable[[ExecProcess], None],
    ) -> None:
        self.pid = 0  #: host PID of the command (set once it runs)
        self.tty = tty
        self._launcher = launcher
        self._loop = asyncio.get_running_loop()
        # With a tty, one fd (the master) is both input and output.
        self._master: int | None = stdin_fd if tty else None
        self._stdin_pipe: int | None = None if tty else stdin_fd
        self._stdin_open = True
        self._output_fds = dict(output_fds)
        self._output_taken = False
        self._write_lock = asyncio.Lock()
        self._on_exit = on_exit
        self._exited: asyncio.Future[int] = self._loop.create_future()
        for fd in {stdin_fd, *output_fds}:
            os.set_blocking(fd, False)
        self._pidfd: int | None = None
        self._waiter: asyncio.Task[None] | None = None
        if isinstance(launcher, HelperChild):
            # The exec helper reports the exit from its reader thread.
            launcher.on_exit(self._exit_reported)
            return
        try:
            self._pidfd = os.pidfd_open(launcher.pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel, not Linux): wait for the launcher on a worker thread.
            self._waiter = self._loop.create_task(self._wait_in_thread())
        else:
            self._loop.add_reader(self._pidfd, self._check_exit)

    @property
    def returncode(self) -> int | None:
        """The exit code once the command has ended (128+N when killed by signal N)."""
        return self._exited.result() if self._exited.done() else None

    async def write(self, data: bytes) -> None:
        """Write to the command's stdin (its terminal with ``tty``), in call order.

        Data written after the command closed its stdin or exited is dropped, as a pipe would.
        """
        async with self._write_lock:
            view = memoryview(data)
            while view and (fd := self._input_fd()) is not None:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await self._wait_writable(fd)
                except OSError:  # EPIPE; EIO from a terminal nobody holds any more
                    self._end_input()
                    return

    async def close_stdin(self) -> None:
        """End of input: closes the pipe; with ``tty`` sends Ctrl-D, as a terminal would."""
        if self.tty:
            await self.write(TTY_EOF)
            return
        async with self._write_lock:
            self._end_input()

    def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """Output chunks (at most 32 KiB) as they arrive, until every stream is at EOF.

        With ``tty`` everything arrives as ``"stdout"``. May be called once; leaving the
        iteration early releases the streams.
        """
        if self._output_taken:
            raise RuntimeError("ExecProcess.output() can be iterated only once")
        self._output_taken = True
        return self._iterate_output()

    def resize(self, rows: int, columns: int) -> None:
        """Set the terminal size (the kernel signals SIGWINCH to the command). No-op without tty."""
        check_window(rows, columns)
        if self._master is not None:
            set_window_size(self._master, rows, columns)

    async def wait(self) -> int:
        """Wait for the command to end; its exit code, or 128+N when killed by signal N."""
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL the command and its process group (everything it started that stayed there)."""
        if self._launcher.poll() is None:
            self._launcher.send_signal(KILL_SIGNAL)

    def close(self) -> None:
        """Release the pipes or terminal now; output not read yet is discarded."""
        self._end_input()
        for fd in list(self._output_fds):
            self._end_output(fd)
        self._release_master()

    async def _iterate_output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        try:
            while self._output_fds:
                progressed = False
                for fd, stream in list(self._output_fds.items()):
                    try:
                        data = os.read(fd, CHUNK_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno != errno.EIO:  # EIO: the terminal's last holder closed it
                            raise
                        data = b""
                    progressed = True
                    if data:
                        yield stream, data
                    else:
                        self._end_output(fd)
                if not progressed and self._output_fds:
                    await self._wait_any_readable(list(self._output_fds))
        finally:
            for fd in list(self._output_fds):
                self._end_output(fd)

    async def _wait_any_readable(self, fds: list[int]) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        for fd in fds:
            self._loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            for fd in fds:
                self._loop.remove_reader(fd)

    async def _wait_writable(self, fd: int) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_writer(fd, ready.set_result, None)
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def _exit_reported(self, code: int) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._finish, code)

    def _check_exit(self) -> None:
        code = self._launcher.poll()
        if code is not None:
            self._finish(code)

    async def _wait_in_thread(self) -> None:
        self._finish(await asyncio.to_thread(self._launcher.wait))

    def _finish(self, returncode: int) -> None:
        if self._exited.done():
            return
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._end_input()
        if self._master not in self._output_fds:
            self._release_master()
        if not self._exited.done():
            self._exited.set_result(exit_code_of(returncode))
        self._on_exit(self)

    def _input_fd(self) -> int | None:
        if not self._stdin_open:
            return None
        return self._master if self.tty else self._stdin_pipe

    def _end_input(self) -> None:
        self._stdin_open = False
        fd, self._stdin_pipe = self._stdin_pipe, None
        if fd is not None:
            self._loop.remove_writer(fd)
            os.close(fd)

    def _end_output(self, fd: int) -> None:
        if self._output_fds.pop(fd, None) is None:
            return
        self._loop.remove_reader(fd)
        if fd != self._master:
            os.close(fd)
        elif self._exited.done():
            self._release_master()
        # Else keep the master open until the command is reaped: a command closes its
        # terminal just before it exits, and closing the master then would hang up the
        # terminal and kill the command with SIGHUP on its way out.

    def _release_master(self) -> None:
        fd, self._master = self._master, None
        if fd is not None:
            self._loop.remove_writer(fd)
            os.close(fd)

    def _abandon(self) -> None:
        """The launch failed or was cancelled: kill, reap and release everything now."""
        self._finish(terminate_launcher(self._launcher))
        self.close()
