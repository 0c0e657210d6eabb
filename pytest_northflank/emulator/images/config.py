"""What an image's config says about running it, and Northflank's command semantics.

Northflank runs images on Kubernetes, so the ``deployment.docker.configType`` choices map to
a pod's ``command`` (entrypoint) and ``args`` (command):

* ``default``: the image's ``Entrypoint`` followed by its ``Cmd``;
* ``customCommand``: the image's ``Entrypoint`` followed by the custom command;
* ``customEntrypoint``: the custom entrypoint alone (Kubernetes drops the image's ``Cmd``
  once ``command`` is given);
* ``customEntrypointCustomCommand``: both custom parts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_northflank.emulator.images.unpack import OPAQUE_XATTR

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageConfig:
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ImageConfig:
        config = document.get("config") or document.get("container_config") or {}
        env: dict[str, str] = {}
        for item in config.get("Env") or []:
            if isinstance(item, str) and "=" in item:
                key, _, value = item.partition("=")
                env[key] = value
        return cls(
            env=env,
            workdir=str(config.get("WorkingDir") or "/"),
            user=str(config.get("User") or ""),
            entrypoint=tuple(str(a) for a in config.get("Entrypoint") or ()),
            cmd=tuple(str(a) for a in config.get("Cmd") or ()),
        )


def main_argv(
    config: ImageConfig,
    config_type: str,
    entrypoint: Sequence[str] = (),
    command: Sequence[str] = (),
) -> list[str]:
    """The main process's argv; empty when neither the image nor the request names one."""
    if config_type == "customEntrypoint":
        return list(entrypoint)
    if config_type == "customEntrypointCustomCommand":
        return [*entrypoint, *command]
    if config_type == "customCommand":
        return [*config.entrypoint, *command]
    return [*config.entrypoint, *config.cmd]


def sandbox_env(config: ImageConfig, hostname: str, user_env: Mapping[str, str]) -> dict[str, str]:
    """Image env, then the service's runtime environment over it (as on Kubernetes)."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, **config.env, **user_env}
    env.setdefault("HOME", "/root")
    return env


def resolve_user(user: str, layers_top_first: Sequence[Path]) -> tuple[int, int, str | None]:
    """(uid, gid, home) for an image ``User`` (``name``, ``uid``, ``name:group``, ``uid:gid``),
    looked up in the image's own ``/etc/passwd`` and ``/etc/group``."""
    if not user:
        return 0, 0, None
    name, _, group = user.partition(":")
    passwd = _table(_image_file("etc/passwd", layers_top_first))
    uid: int | None = None
    gid: int | None = None
    home: str | None = None
    for fields in passwd:
        if len(fields) >= 6 and (fields[0] == name or fields[2] == name):
            uid, gid, home = _int(fields[2]), _int(fields[3]), fields[5]
            break
    if uid is None:
        if not name.isdigit():
            raise LookupError(f"user {name!r} is not in the image's /etc/passwd")
        uid, gid = int(name), 0 if gid is None else gid
    if group:
        gid = None
        for fields in _table(_image_file("etc/group", layers_top_first)):
            if len(fields) >= 3 and (fields[0] == group or fields[2] == group):
                gid = _int(fields[2])
                break
        if gid is None:
            if not group.isdigit():
                raise LookupError(f"group {group!r} is not in the image's /etc/group")
            gid = int(group)
    return uid, gid if gid is not None else 0, home


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _table(data: bytes) -> list[list[str]]:
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines()]


def _image_file(relative: str, layers_top_first: Sequence[Path]) -> bytes:
    """A file as the merged image shows it: the topmost layer that has it (or hides it by a
    whiteout or an opaque directory) decides. Symlinks are not followed: this reads the host."""
    parts = relative.split("/")
    for layer in layers_top_first:
        path = layer.joinpath(*parts)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            if _hidden_below(layer, parts):
                return b""
            continue
        if not stat.S_ISREG(st.st_mode):
            return b""  # a whiteout, a link or something odd: treat as absent
        with open(path, "rb") as handle:
            return handle.read(1 << 20)
    return b""


def _hidden_below(layer: Path, parts: list[str]) -> bool:
    """Whether ``layer`` makes lower layers' copy of ``parts`` invisible (opaque parent)."""
    current = layer
    for part in parts[:-1]:
        current = current / part
        try:
            if os.getxattr(current, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                return True
        except OSError:
            return False
    return False
