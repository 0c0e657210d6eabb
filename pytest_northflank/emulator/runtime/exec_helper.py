"""The emulator's side of ``helper_in_sandbox.py``: start the helper, ask it to fork commands,
follow their exits, signal them. One :class:`ExecHelper` per container, started at its first
exec; a command it started is a :class:`HelperChild`, which :class:`ExecProcess` treats like
a launcher process."""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pytest_northflank.emulator.runtime.spawn_thread import Spawner
from pytest_northflank.emulator.runtime.start_in_sandbox import (
    KILL_SIGNAL,
    Report,
    popen_launcher,
    read_report,
    spec_pipe,
    terminate_launcher,
)
from pytest_northflank.errors import EmulatorError

HELPER = Path(__file__).with_name("helper_in_sandbox.py")
#: Larger requests (a huge environment) go through a launcher of their own.
MAX_REQUEST = 128 * 1024
_MAX_MESSAGE = 1 << 16
START_TIMEOUT = 30.0
#: Exit code of a command whose helper vanished (its parent-death signal is SIGKILL).
GONE = 128 + signal.SIGKILL


class HelperChild:
    """A command the helper started; quacks like the launcher ``Popen`` it replaces."""

    def __init__(self, helper: ExecHelper, pid: int) -> None:
        self.helper = helper
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()
        self._watchers: list[Callable[[int], None]] = []
        self._lock = threading.Lock()

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(code)`` (from the helper's reader thread) once it exits."""
        with self._lock:
            if self.returncode is None:
                self._watchers.append(callback)
                return
        callback(self.returncode)

    def exited(self, code: int) -> None:
        with self._lock:
            if self.returncode is not None:
                return
            self.returncode = code
            watchers, self._watchers = self._watchers, []
        self._exited.set()
        for watcher in watchers:
            watcher(code)

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """KILL_SIGNAL (a launcher's "kill everything") becomes SIGKILL for the group."""
        if self.returncode is None:
            self.helper.signal(self.pid, signal.SIGKILL if signum == KILL_SIGNAL else signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class ExecHelper:
    """One sandbox's exec helper process and its control socket."""

    def __init__(self, spawner: Spawner, spec: dict[str, Any], handed_over: list[int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket = ours
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Report]] = {}
        self._children: dict[int, HelperChild] = {}
        self._closed = False
        self._state_lock = threading.Lock()
        report_read, report_write = os.pipe()
        spec_fd = -1
        try:
            spec_fd = spec_pipe({**spec, "control_fd": theirs.fileno()})
            null = os.open(os.devnull, os.O_RDWR)
            fds = [spec_fd, report_write, theirs.fileno(), *handed_over]
            passed = (null, null, null)

            def start() -> subprocess.Popen[bytes]:
                return popen_launcher(
                    spec_fd,
                    report_write,
                    stdio=passed,
                    pass_fds=tuple(fds),
                    handed_over=[spec_fd, report_write, null, *handed_over],
                    script=HELPER,
                )

            self._process = spawner.submit(start).result()
        except BaseException:
            ours.close()
            os.close(report_read)
            raise
        finally:
            theirs.close()
        try:
            report = read_report(report_read, START_TIMEOUT)
        finally:
            os.close(report_read)
        if report is None or "error" in report:
            terminate_launcher(self._process)
            ours.close()
            detail = "it exited without a report" if report is None else report["error"]
            raise EmulatorError(f"the exec helper could not start: {detail}")
        self._reader = threading.Thread(target=self._read, name="nf-exec-helper", daemon=True)
        self._reader.start()

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self._process

    @property
    def alive(self) -> bool:
        return not self._closed

    async def spawn(self, spec: dict[str, Any], stdio: tuple[int, int, int]) -> Report:
        """Fork a command with ``stdio``; the helper's report: ``pid`` and ``child`` (its
        :class:`HelperChild`), or ``error``, or nothing when the helper is gone."""
        future: Future[Report] = Future()
        request_id = next(self._ids)
        data = json.dumps({"op": "exec", "id": request_id, "spec": spec}).encode()
        with self._state_lock:
            if self._closed:
                raise EmulatorError("the sandbox's exec helper is gone")
            self._pending[request_id] = future
        try:
            self._send(data, list(stdio))
        except OSError as exc:
            with self._state_lock:
                self._pending.pop(request_id, None)
            raise EmulatorError(f"the sandbox's exec helper is gone: {exc}") from None
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            # The command starts anyway: kill it as soon as its PID is known.
            future.add_done_callback(self._kill_abandoned)
            raise

    def _kill_abandoned(self, future: Future[Report]) -> None:
        pid = future.result().get("pid")
        if pid is not None:
            self.signal(pid, signal.SIGKILL)

    def signal(self, pid: int, signum: int) -> None:
        with contextlib.suppress(OSError):  # helper gone: its commands are gone with it
            self._send(json.dumps({"op": "signal", "pid": pid, "signal": signum}).encode(), [])

    def close(self) -> None:
        """Stop the helper; the commands it still runs die with it (parent-death signal)."""
        with self._state_lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        terminate_launcher(self._process)
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
        self._socket.close()

    def _send(self, data: bytes, fds: list[int]) -> None:
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        with self._send_lock:
            self._socket.sendmsg([data], ancillary)

    def _read(self) -> None:
        while True:
            try:
                data = self._socket.recv(_MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            if "exit" in message:
                with self._state_lock:
                    child = self._children.pop(message["exit"], None)
                if child is not None:
                    child.exited(message["code"])
                continue
            with self._state_lock:
                future = self._pending.pop(message["id"], None)
                if "pid" in message:
                    # Handed over with the report: its exit may be reported before the
                    # caller looks.
                    child = message["child"] = HelperChild(self, message["pid"])
                    self._children[child.pid] = child
            if future is not None:
                future.set_result(message)
        self._gone()

    def _gone(self) -> None:
        with self._state_lock:
            self._closed = True
            pending, self._pending = self._pending, {}
            children, self._children = self._children, {}
        for future in pending.values():
            future.set_result({})  # no report: the sandbox is not running any more
        for child in children.values():
            child.exited(GONE)
