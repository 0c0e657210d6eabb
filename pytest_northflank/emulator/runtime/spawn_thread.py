"""The one long-lived thread that forks every sandbox process (``Spawner``)."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future

from pytest_northflank.errors import EmulatorError

_Request = tuple[Callable[[], "subprocess.Popen[bytes]"], "Future[subprocess.Popen[bytes]]"]


class Spawner:
    """Starts every sandbox process from one long-lived thread.

    Why: the launchers use ``PR_SET_PDEATHSIG`` so that they die with the emulator, and the
    kernel fires it when the *thread* that forked them exits, not the process. uvicorn and
    ``asyncio.to_thread`` run code on short-lived threads; forking from those would kill
    sandboxes at random. This thread lives until the runtime shuts down.
    """

    def __init__(self, name: str) -> None:
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, start: Callable[[], subprocess.Popen[bytes]]
    ) -> Future[subprocess.Popen[bytes]]:
        future: Future[subprocess.Popen[bytes]] = Future()
        with self._lock:
            if self._closed:
                raise EmulatorError("the container runtime is shut down")
            self._requests.put((start, future))
        return future

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._requests.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            start, future = request
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(start())
            except BaseException as exc:
                future.set_exception(exc)
