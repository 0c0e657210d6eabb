"""The emulator's image settings, and the provider built from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pytest_northflank.emulator.images.cache import ImageCache
from pytest_northflank.emulator.images.credentials import load_docker_auths, load_saved_credentials
from pytest_northflank.emulator.images.provider import ImageProvider
from pytest_northflank.emulator.images.store import ImageStore
from pytest_northflank.errors import ConfigError

IMAGES_ENV = "NF_EMULATOR_IMAGES"


@dataclass(frozen=True)
class ImageOptions:
    """``enabled=False``: every sandbox uses the host's userland (recorded as a fallback).
    ``require``: a sandbox whose image cannot be had fails instead of using the host's."""

    enabled: bool = True
    cache_dir: Path | None = None  #: default: $XDG_CACHE_HOME/pytest-northflank/images
    mirror: str | None = None  #: a registry URL serving Docker Hub names
    insecure: tuple[str, ...] = ()  #: registries spoken to over plain HTTP
    credentials_file: Path | None = None  #: saved credential id -> username/password
    require: bool = False
    timeout: float = 30.0


def options_from_environment() -> ImageOptions:
    """Options as ``NF_EMULATOR_IMAGES`` (pull, require or off; the plugin's
    ``--nf-emulator-images`` twin) says, for an emulator started without explicit ones."""
    mode = os.environ.get(IMAGES_ENV, "pull").strip().lower()
    if mode not in ("pull", "require", "off"):
        raise ConfigError(f"{IMAGES_ENV}={mode!r}: expected pull, require or off")
    return ImageOptions(enabled=mode != "off", require=mode == "require")


def build_provider(options: ImageOptions, *, directory_mode: bool) -> ImageProvider:
    store = None
    if options.enabled and not directory_mode:
        cache = ImageCache(options.cache_dir)
        cache.hold()  # prune waits for this emulator to end
        store = ImageStore(
            cache,
            insecure=frozenset(options.insecure),
            mirror=options.mirror,
            saved_credentials=(
                load_saved_credentials(options.credentials_file)
                if options.credentials_file
                else None
            ),
            docker_auths=load_docker_auths(),
            timeout=options.timeout,
        )
    return ImageProvider(store, require_images=options.require, directory_mode=directory_mode)
