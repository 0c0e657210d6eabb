"""Container images for the emulator: pulled over the registry v2 API (or loaded from
``docker save`` / OCI files), cached by digest, unpacked once per layer and stacked as the
read-only lower layers of each sandbox's overlay."""

from __future__ import annotations

from pytest_northflank.emulator.images.cache import CacheBusy, CachedImage, ImageCache
from pytest_northflank.emulator.images.config import ImageConfig, main_argv, resolve_user
from pytest_northflank.emulator.images.errors import (
    BadImage,
    ImageError,
    ImageNotFound,
    RegistryAuthError,
    RegistryUnreachable,
)
from pytest_northflank.emulator.images.load import load_images
from pytest_northflank.emulator.images.reference import ImageRef, parse_reference
from pytest_northflank.emulator.images.store import Image, ImageStore

__all__ = [
    "BadImage",
    "CacheBusy",
    "CachedImage",
    "Image",
    "ImageCache",
    "ImageConfig",
    "ImageError",
    "ImageNotFound",
    "ImageRef",
    "ImageStore",
    "RegistryAuthError",
    "RegistryUnreachable",
    "load_images",
    "main_argv",
    "parse_reference",
    "resolve_user",
]
