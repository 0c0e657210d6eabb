"""SIGTERM and SIGHUP (what CI sends on cancel) turned into an orderly teardown."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class GracefulSignals:
    """Turn SIGTERM and SIGHUP into ``KeyboardInterrupt`` so pytest tears down as on Ctrl-C.

    Plain pytest dies on SIGTERM (what CI sends on cancel) without running any finalizer; after
    this, the fixtures' teardown and the session-end sweep run, and a second signal is not
    swallowed: it interrupts the teardown too, leaving the rest to the reaper.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self.received: int | None = None

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


# The one GracefulSignals of this process (signal handlers are process-wide).
_installed: GracefulSignals | None = None


def guard_process() -> None:
    """Make SIGTERM and SIGHUP tear down like Ctrl-C in this process (once, main thread only)."""
    global _installed
    if _installed is None and threading.current_thread() is threading.main_thread():
        _installed = GracefulSignals()
        _installed.install()


def release_process() -> None:
    """Put back the signal handlers :func:`guard_process` replaced."""
    global _installed
    if _installed is not None:
        _installed.uninstall()
        _installed = None
