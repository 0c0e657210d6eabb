"""The emulator's machine-readable info file (``--info-file PATH``).

Once listening, ``python -m pytest_northflank.emulator --info-file PATH`` writes PATH (mode
0600, replaced atomically, so a reader sees the whole file or none) and removes it on a clean
exit::

    {"url": "http://127.0.0.1:8080", "pid": 4242, "isolation": "namespace",
     "isolation_reason": "...", "token_source": "env", "token_env": "NORTHFLANK_EMULATOR_TOKEN"}

``token_source`` says where the token comes from: ``"env"`` (the variable ``token_env`` names),
``"argument"`` (``--token``: the caller knows it) or ``"generated"`` (the emulator made it;
then, and only then, the file holds it under ``token``). A file left behind by a killed
emulator names a ``pid`` that is gone. :func:`read_info_file` reads it back. Standard library
only, so a reader loads nothing of the emulator's web stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["EmulatorInfo", "TokenSource", "read_info_file", "remove_info_file", "write_info_file"]

TokenSource = Literal["env", "argument", "generated"]
_TOKEN_SOURCES = ("env", "argument", "generated")


@dataclass(frozen=True)
class EmulatorInfo:
    """Where a running emulator listens and where its token comes from."""

    url: str
    pid: int
    isolation: str
    isolation_reason: str
    token_source: TokenSource
    #: the environment variable holding the token (``token_source == "env"``)
    token_env: str | None = None
    #: the token itself, only when the emulator generated it
    token: str | None = None
    #: the CA certificate (PEM) that signed the forwarding tunnel's TLS certificate
    ca_file: str | None = None

    def __repr__(self) -> str:
        token = ", token=***" if self.token is not None else ""
        return (
            f"EmulatorInfo(url={self.url!r}, pid={self.pid}, isolation={self.isolation!r}, "
            f"token_source={self.token_source!r}, token_env={self.token_env!r}{token})"
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "url": self.url,
            "pid": self.pid,
            "isolation": self.isolation,
            "isolation_reason": self.isolation_reason,
            "token_source": self.token_source,
        }
        if self.token_env is not None:
            data["token_env"] = self.token_env
        if self.token is not None:
            data["token"] = self.token
        if self.ca_file is not None:
            data["ca_file"] = self.ca_file
        return data


def write_info_file(path: Path, info: EmulatorInfo) -> None:
    """Write ``info`` to ``path`` atomically (a 0600 temporary file beside it, then renamed)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(info.to_json(), out)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove_info_file(path: Path, pid: int) -> None:
    """Remove ``path`` if it still describes the emulator ``pid`` (never another one's file)."""
    info = read_info_file(path)
    if info is not None and info.pid == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(key)
    return value


def read_info_file(path: str | os.PathLike[str]) -> EmulatorInfo | None:
    """The info an emulator wrote to ``path``; None when the file is missing, unreadable,
    truncated, not JSON, or has a field of the wrong type."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    url, pid = data.get("url"), data.get("pid")
    isolation, reason = data.get("isolation"), data.get("isolation_reason")
    source = data.get("token_source")
    if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    if not (isinstance(isolation, str) and isolation and isinstance(reason, str)):
        return None
    if source not in _TOKEN_SOURCES:
        return None
    try:
        token_env = _optional_str(data, "token_env")
        token = _optional_str(data, "token")
        ca_file = _optional_str(data, "ca_file")
    except ValueError:
        return None
    if (source == "env") != (token_env is not None) or (source == "generated") != (
        token is not None
    ):
        return None
    return EmulatorInfo(url, pid, isolation, reason, source, token_env, token, ca_file)
