"""What a command did: :class:`CommandResult` (from ``Sandbox.run`` and ``Process.wait``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_northflank.errors import CommandFailed
from pytest_northflank.redaction import mask

__all__ = ["FAILURE_TAIL_CHARS", "FAILURE_TAIL_LINES", "CommandResult"]

# How much of the output a failed check() or a timeout shows.
FAILURE_TAIL_LINES = 20
FAILURE_TAIL_CHARS = 4000


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
