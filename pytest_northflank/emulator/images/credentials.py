"""Registry credentials: Northflank's saved registry credentials and Docker's ``config.json``.

On Northflank, ``deployment.external.credentials`` names registry credentials saved in the
team. The emulator has no such store, so it reads one JSON file (``--registry-credentials``):
``{"<credential id>": {"username": ..., "password": ..., "registry": "<host>"}}``. Without a
credential id, the user's Docker ``config.json`` ``auths`` apply, by registry host.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_northflank.errors import ConfigError

Auth = tuple[str, str]  # username, password


@dataclass(frozen=True)
class SavedCredential:
    username: str
    password: str
    registry: str | None = None  #: the host it is for; None: any


def normalise_host(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``host:5000/`` -> ``host:5000``."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def load_docker_auths(path: Path | None = None) -> dict[str, Auth]:
    """Host -> (username, password) from a Docker config's ``auths`` (missing file: none).

    Credential helpers (``credsStore``) are not run: they need Docker's binaries.
    """
    path = docker_config_path() if path is None else path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Docker config {path}: {exc}") from None
    auths: dict[str, Auth] = {}
    raw = data.get("auths") if isinstance(data, dict) else None
    for key, entry in (raw or {}).items():
        if not isinstance(entry, dict):
            continue
        auth = _entry_auth(entry)
        if auth is not None:
            auths[normalise_host(key)] = auth
    return auths


def _entry_auth(entry: Mapping[str, Any]) -> Auth | None:
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return entry["username"], entry["password"]
    encoded = entry.get("auth")
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def load_saved_credentials(path: Path) -> dict[str, SavedCredential]:
    """Credential id -> credential from the emulator's credentials file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read registry credentials {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"registry credentials {path}: expected a JSON object of ids")
    saved: dict[str, SavedCredential] = {}
    for key, entry in data.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("username"), str)
            and isinstance(entry.get("password"), str)
        ):
            raise ConfigError(
                f"registry credentials {path}: {key!r} needs string username and password"
            )
        registry = entry.get("registry")
        saved[key] = SavedCredential(
            entry["username"],
            entry["password"],
            normalise_host(registry) if isinstance(registry, str) else None,
        )
    return saved
