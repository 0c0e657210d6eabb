"""The local side of ``pytest-northflank shell`` and ``exec``: a terminal (or pipes) bridged to
an exec session (``northflank-api.md`` section 3).

``shell`` puts the local terminal in raw mode, so every key, Ctrl-C and Ctrl-D included, goes to
the remote pseudo-terminal, whose line discipline turns Ctrl-C into SIGINT for the remote
foreground command (the session stays). A window resize (SIGWINCH) becomes a ``resize`` frame.
The exit code is the remote shell's.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty
from types import FrameType
from typing import TYPE_CHECKING

from pytest_northflank.errors import ExecError

if TYPE_CHECKING:
    from pytest_northflank.client.exec_session import ExecSession

# A login-ish shell: bash when the image has it, else sh.
SHELL_ARGV = ["sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash -i || exec sh -i"]
READ_BYTES = 16 * 1024
POLL_SECONDS = 0.1


def terminal_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal on ``fd``; 24x80 when it reports none."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return (size.lines or 24, size.columns or 80)


def exit_code_of(session: ExecSession) -> int:
    result = session.result
    if result is None or result.exit_code < 0:
        return 1
    return result.exit_code


def _pump_output(session: ExecSession, done: threading.Event, failure: list[BaseException]) -> None:
    out, err = sys.stdout.fileno(), sys.stderr.fileno()
    try:
        for chunk in session:
            os.write(out if chunk.stream == "stdout" else err, chunk.data)
    except BaseException as error:  # handed to the main thread, which reports it
        failure.append(error)
    finally:
        done.set()


def bridge(session: ExecSession, *, interactive: bool) -> int:
    """Copy stdin to the session and its output to stdout/stderr until the command ends;
    return its exit code. ``interactive``: stdin is a terminal, put in raw mode meanwhile."""
    stdin = sys.stdin.fileno()
    done = threading.Event()
    failure: list[BaseException] = []
    reader = threading.Thread(
        target=_pump_output, args=(session, done, failure), name="nf-exec-output", daemon=True
    )
    resized = threading.Event()

    def on_winch(signum: int, frame: FrameType | None) -> None:
        resized.set()

    saved = termios.tcgetattr(stdin) if interactive else None
    previous = signal.signal(signal.SIGWINCH, on_winch) if interactive else None
    try:
        if interactive:
            tty.setraw(stdin)
        reader.start()
        stdin_open = True
        while not done.is_set():
            if resized.is_set():
                resized.clear()
                with contextlib.suppress(ExecError):
                    session.resize(*terminal_size(stdin))
            if not stdin_open:
                done.wait(POLL_SECONDS)
                continue
            ready, _, _ = select.select([stdin], [], [], POLL_SECONDS)
            if not ready:
                continue
            data = os.read(stdin, READ_BYTES)
            with contextlib.suppress(ExecError):  # it finished meanwhile
                if data:
                    session.write(data)
                else:
                    session.close_stdin()
                    stdin_open = False
        reader.join()
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
    if failure:
        raise failure[0]
    return exit_code_of(session)
