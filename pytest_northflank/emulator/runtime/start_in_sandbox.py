"""The parent side of ``in_sandbox.py``: start it (for a container's main process or an exec),
read its one-line report, signal and stop it. Runs in the emulator's process."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pytest_northflank.emulator.runtime.errors import (
    CommandNotExecutable,
    CommandNotFound,
    LauncherSilent,
)
from pytest_northflank.errors import EmulatorError

LAUNCHER = Path(__file__).with_name("in_sandbox.py")
# Sent to a launcher: SIGKILL its target and everything the target started.
KILL_SIGNAL = signal.SIGUSR1
_MAX_SPEC_BYTES = 1 << 20

Report = dict[str, Any]


def launcher_argv(spec_fd: int, report_fd: int, script: Path = LAUNCHER) -> list[str]:
    # -I: ignore PYTHON* variables and the user site; -S: no site import (fast start-up).
    return [
        sys.executable,
        "-I",
        "-S",
        str(script),
        str(spec_fd),
        str(report_fd),
        str(os.getpid()),
    ]


def popen_launcher(
    spec_fd: int,
    report_fd: int,
    *,
    stdio: tuple[int, int, int],
    pass_fds: tuple[int, ...],
    handed_over: Sequence[int],
    script: Path = LAUNCHER,
) -> subprocess.Popen[bytes]:
    """Start a launcher in its own session with an empty environment, then close
    ``handed_over``: the launcher holds its own copies, or failed to start and needs none."""
    try:
        return subprocess.Popen(
            launcher_argv(spec_fd, report_fd, script),
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            pass_fds=pass_fds,
            env={},
            start_new_session=True,
        )
    finally:
        for fd in handed_over:
            os.close(fd)


def spec_pipe(spec: dict[str, Any]) -> int:
    """A pipe already holding the JSON spec; returns its read end (for ``pass_fds``).

    The spec (argv and environment) never appears on a command line, where ``ps`` shows it.
    """
    data = json.dumps(spec).encode()
    if len(data) > _MAX_SPEC_BYTES:
        raise EmulatorError(
            f"command and environment are too large ({len(data)} bytes encoded, "
            f"limit {_MAX_SPEC_BYTES})"
        )
    read_end, write_end = os.pipe()
    try:
        if len(data) > 65536 and hasattr(fcntl, "F_SETPIPE_SZ"):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _MAX_SPEC_BYTES)
        os.set_blocking(write_end, False)
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view) :]
    except OSError as exc:
        os.close(read_end)
        raise EmulatorError(f"could not hand the command to the launcher: {exc}") from exc
    finally:
        os.close(write_end)
    return read_end


def read_report(fd: int, timeout: float) -> Report | None:
    """Blocking read of a launcher report; None if the launcher died without one."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LauncherSilent(f"the sandbox launcher did not report within {timeout:g} s")
        if not poller.poll(remaining * 1000):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return _parse(data)
        data += chunk


async def read_report_async(fd: int) -> Report | None:
    """Read a launcher report without blocking the event loop (``fd`` must be non-blocking)."""
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(fd, readable.set_result, None)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return _parse(data)
        data += chunk


def _parse(data: bytes) -> Report | None:
    if not data:
        return None
    report: Report = json.loads(data)
    return report


def launch_error(
    report: Report | None, popen: subprocess.Popen[bytes], *, sandbox_id: str, argv0: str, what: str
) -> EmulatorError:
    """Turn a failed launcher report into the error the caller sees."""
    if report is None:
        status = popen.wait()
        return EmulatorError(
            f"could not start {what} in sandbox {sandbox_id!r}: the launcher exited "
            f"with status {status} without a report"
        )
    failure = report["error"]
    stage, number, message = failure["stage"], failure["errno"], failure["message"]
    if stage == "exec":
        if number == errno.ENOENT:
            return CommandNotFound(argv0)
        return CommandNotExecutable(argv0, number)
    if stage in ("enter sandbox", "fork") and number in (errno.ESRCH, errno.ENOMEM):
        return EmulatorError(f"sandbox {sandbox_id!r} is not running")
    if stage in ("launch", "fork") and number == errno.EAGAIN:
        return EmulatorError(
            f"could not start {what} in sandbox {sandbox_id!r}: it runs as many processes as "
            f"its limit allows ({message})"
        )
    return EmulatorError(f"could not start {what} in sandbox {sandbox_id!r}: {stage}: {message}")


class Launched(Protocol):
    """A launcher process, or a command the exec helper started (``HelperChild``)."""

    @property
    def pid(self) -> int: ...
    def poll(self) -> int | None: ...
    def send_signal(self, signum: int, /) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


def terminate_launcher(popen: Launched, timeout: float = 5.0) -> int:
    """Kill a launcher's target (and its process group), then reap the launcher."""
    if popen.poll() is None:
        popen.send_signal(KILL_SIGNAL)
        try:
            return popen.wait(timeout)
        except subprocess.TimeoutExpired:
            # Its target has SIGKILL as parent-death signal, so this still kills the target.
            popen.kill()
    return popen.wait()
