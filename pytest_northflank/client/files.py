"""File and directory copy over exec, streamed as tar (``northflank-api.md`` section 4).

Two exec round trips per copy: one probe (is there a tar, does the path exist, file or
directory, readable?) and one tar stream. Uploads pack on a producer thread straight into
stdin payload frames while the main thread watches for completion; downloads feed decoded
stdout frames to a stream-mode tar reader that extracts member by member. Neither side ever
holds more than a frame or two in memory.

Path semantics (like ``cp`` for files, like ``rsync src/ dst/`` for directories):

* upload of a file: ``remote_path`` is the new file's path; if it is an existing directory
  (or ends with ``/``) the file goes inside it under its local name.
* upload of a directory: its contents land in ``remote_path`` (created if missing).
* download of a file: ``local_path`` is the new file's path; an existing directory gets the
  file inside it under its remote name.
* download of a directory: its contents land in ``local_path`` (created if missing).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pytest_northflank.client.connector import ExecConnector
from pytest_northflank.client.exec import run_command
from pytest_northflank.client.exec_session import FRAME_BYTES, ExecResult, ExecSession
from pytest_northflank.client.tarstream import ChunkWriter, extract_file, extract_tree, pack
from pytest_northflank.errors import (
    CommandTimeout,
    ExecError,
    FileTransferError,
    NorthflankError,
)

__all__ = ["PROBE_SCRIPT", "TransferStats", "download", "upload"]

# One round trip answers every question asked before a copy. Exit codes: 127 no tar,
# 2 missing, 10 directory, 11 file, 12 unreadable directory, 13 unreadable file.
PROBE_SCRIPT = (
    'command -v tar >/dev/null 2>&1 || exit 127; test -e "$1" || exit 2; '
    'if test -d "$1"; then kind=10; else kind=11; fi; '
    'test -r "$1" || exit $((kind + 2)); exit $kind'
)
_UPLOAD_SCRIPT = 'mkdir -p -- "$1" && cd -- "$1" && exec tar -xpf - --no-same-owner'
_STDERR_KEEP = 16 * 1024

ProbeKind = Literal["missing", "directory", "file"]


@dataclass(frozen=True)
class TransferStats:
    """What a copy moved: ``bytes`` of file content, counts, and wall-clock seconds."""

    direction: Literal["upload", "download"]
    is_directory: bool
    files: int
    bytes: int
    duration: float
    remote_path: str
    local_path: Path


def _excerpt(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return text if len(text) <= 500 else "..." + text[-500:]


def _reason(stderr: bytes, exit_code: int) -> str:
    """A short human reason from tar's or mkdir's stderr."""
    text = stderr.decode("utf-8", errors="replace")
    for needle, reason in (
        ("Permission denied", "permission denied"),
        ("Read-only file system", "read-only file system"),
        ("No space left on device", "no space left on device"),
        ("Not a directory", "a path component is not a directory"),
        ("No such file or directory", "no such file or directory"),
    ):
        if needle in text:
            return f"{reason} ({_excerpt(stderr)})"
    if text.strip():
        return f"remote command exited {exit_code}: {_excerpt(stderr)}"
    return f"remote command exited {exit_code} without a message"


class _Probe:
    def __init__(self, result: ExecResult, where: str) -> None:
        code = result.exit_code
        self.readable = code not in (12, 13)
        if code == 127:
            detail = f" ({_excerpt(result.stderr)})" if result.stderr.strip() else ""
            raise FileTransferError(
                f"{where}: the image has no `tar` (or no `sh`) on its PATH; file copy needs "
                f"both{detail}"
            )
        if code == 2:
            self.kind: ProbeKind = "missing"
        elif code in (10, 12):
            self.kind = "directory"
        elif code in (11, 13):
            self.kind = "file"
        else:
            raise FileTransferError(
                f"{where}: probing the remote path failed: {_reason(result.stderr, code)}"
            )


def _probe(
    connector: ExecConnector, project_id: str, service_id: str, remote: str, where: str
) -> _Probe:
    result = run_command(
        connector, project_id, service_id, ["sh", "-c", PROBE_SCRIPT, "sh", remote]
    )
    return _Probe(result, where)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.001, deadline - time.monotonic())


def upload(
    connector: ExecConnector,
    project_id: str,
    service_id: str,
    local_path: str | os.PathLike[str],
    remote_path: str,
    *,
    timeout: float | None = None,
) -> TransferStats:
    """Copy a local file or directory into the service (see the module docstring)."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    local = Path(local_path)
    where = f"upload of {local} to {service_id}:{remote_path}"
    if not remote_path:
        raise FileTransferError(f"{where}: the remote path is empty")
    if not local.exists():
        raise FileTransferError(f"{where}: the local path {local} does not exist")
    source = local.resolve()
    is_dir = source.is_dir()

    probe = _probe(connector, project_id, service_id, remote_path, where)
    if is_dir:
        if probe.kind == "file":
            raise FileTransferError(
                f"{where}: the remote path is a file; a directory needs a directory path"
            )
        target_dir, arcname = remote_path, "."
    elif probe.kind == "directory" or remote_path.endswith("/"):
        target_dir, arcname = remote_path, source.name
    else:
        target_dir = posixpath.dirname(remote_path) or "."
        arcname = posixpath.basename(remote_path)

    session = connector.start(
        project_id,
        service_id,
        ["sh", "-c", _UPLOAD_SCRIPT, "sh", target_dir],
        description=f"tar -x into {target_dir}",
    )
    producer = _Producer(session, source, arcname)
    try:
        producer.start()
        try:
            result = session.wait(timeout=_remaining(deadline))
        except CommandTimeout:
            raise FileTransferError(
                f"{where}: did not finish within {timeout:g}s; the copy was stopped"
            ) from None
        except ExecError as exc:
            if producer.error is not None:
                raise producer.error from None
            raise FileTransferError(f"{where}: {exc}") from None
    finally:
        session.close()
        producer.join()
    if producer.error is not None:
        raise producer.error
    if not result.ok:
        raise FileTransferError(f"{where} failed: {_reason(result.stderr, result.exit_code)}")
    return TransferStats(
        direction="upload",
        is_directory=is_dir,
        files=producer.files,
        bytes=producer.bytes,
        duration=time.monotonic() - started,
        remote_path=remote_path,
        local_path=local,
    )


class _Producer:
    """Packs the tar on a thread, sending each full frame as it fills."""

    def __init__(self, session: ExecSession, source: Path, arcname: str) -> None:
        self._session = session
        self._source = source
        self._arcname = arcname
        self.error: NorthflankError | None = None
        self.files = 0
        self.bytes = 0
        self._thread = threading.Thread(target=self._run, name="nf-upload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            writer = ChunkWriter(self._session.write, FRAME_BYTES)
            stats = pack(self._source, self._arcname, writer)
            writer.close()
            self._session.close_stdin()
            self.files, self.bytes = stats.files, stats.bytes
        except ExecError:
            # The connection ended first; the main thread reports why (tar's exit status).
            if not self._session.finished:
                self._session.abort()
        except NorthflankError as exc:
            self.error = exc
            self._session.abort()  # stop the remote tar: the archive is incomplete
        except BaseException as exc:
            self.error = FileTransferError(f"packing {self._source} failed: {exc!r}")
            self._session.abort()


class _StdoutReader(io.RawIOBase):
    """The session's decoded stdout as a readable byte stream; stderr is kept aside."""

    def __init__(self, session: ExecSession, deadline: float | None) -> None:
        self._session = session
        self._deadline = deadline
        self._pending = memoryview(b"")
        self.stderr = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = self._session.read(timeout=_remaining(self._deadline))
            if chunk is None:
                return 0
            if chunk.stream == "stderr":
                self.stderr += chunk.data
                del self.stderr[:-_STDERR_KEEP]
                continue
            self._pending = memoryview(chunk.data)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def download(
    connector: ExecConnector,
    project_id: str,
    service_id: str,
    remote_path: str,
    local_path: str | os.PathLike[str],
    *,
    timeout: float | None = None,
) -> TransferStats:
    """Copy a file or directory out of the service (see the module docstring)."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    local = Path(local_path)
    where = f"download of {service_id}:{remote_path} to {local}"
    if not remote_path:
        raise FileTransferError(f"{where}: the remote path is empty")

    probe = _probe(connector, project_id, service_id, remote_path, where)
    if probe.kind == "missing":
        raise FileTransferError(f"{where}: the remote path does not exist")
    if not probe.readable:
        raise FileTransferError(f"{where}: permission denied reading the remote path")
    is_dir = probe.kind == "directory"
    if is_dir:
        if local.exists() and not local.is_dir():
            raise FileTransferError(f"{where}: the local path is a file, not a directory")
        argv = ["tar", "-cf", "-", "-C", remote_path, "."]
        destination = local
    else:
        name = posixpath.basename(remote_path.rstrip("/"))
        # ``./name`` keeps a name starting with ``-`` from reading as an option; ``-h`` copies
        # what a symlink points to, as ``cp`` would.
        argv = ["tar", "-chf", "-", "-C", posixpath.dirname(remote_path) or ".", f"./{name}"]
        destination = local / name if local.is_dir() else local

    session = connector.start(project_id, service_id, argv, description=f"tar -c {remote_path}")
    # tar -c reads no stdin; EOF up front keeps any proxy from waiting for it. If the
    # connection already ended, reading says how.
    with contextlib.suppress(ExecError):
        session.close_stdin()
    reader = _StdoutReader(session, deadline)
    stream = io.BufferedReader(reader, buffer_size=256 * 1024)
    try:
        try:
            stats = (
                extract_tree(stream, destination) if is_dir else extract_file(stream, destination)
            )
            result = session.wait(timeout=_remaining(deadline))
        except CommandTimeout:
            raise FileTransferError(
                f"{where}: did not finish within {timeout:g}s; the copy was stopped"
            ) from None
        except FileTransferError as exc:
            # Garbage in usually means the remote tar failed first: report that instead.
            failed = session.result if session.finished else None
            if failed is not None and not failed.ok:
                raise FileTransferError(
                    f"{where} failed: {_reason(bytes(reader.stderr), failed.exit_code)}"
                ) from None
            if type(exc) is FileTransferError:
                raise FileTransferError(f"{where}: {exc}") from None
            raise
        except ExecError as exc:
            raise FileTransferError(f"{where}: {exc}") from None
    finally:
        session.close()
    stderr = bytes(reader.stderr) + result.stderr
    if not result.ok:
        raise FileTransferError(f"{where} failed: {_reason(stderr, result.exit_code)}")
    return TransferStats(
        direction="download",
        is_directory=is_dir,
        files=stats.files,
        bytes=stats.bytes,
        duration=time.monotonic() - started,
        remote_path=remote_path,
        local_path=destination,
    )
