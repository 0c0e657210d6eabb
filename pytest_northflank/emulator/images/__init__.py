"""Container images for the emulator: pulled over the registry v2 API (or loaded from
``docker save`` / OCI files), cached by digest, unpacked once per layer and stacked as the
read-only lower layers of each sandbox's overlay.

Names are imported on first use: the pytest header reads the cache without loading httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "CacheBusy": "cache", "CachedImage": "cache", "ImageCache": "cache",
    "ImageConfig": "config", "main_argv": "config", "resolve_user": "config",
    "BadImage": "errors", "ImageError": "errors", "ImageNotFound": "errors",
    "RegistryAuthError": "errors", "RegistryUnreachable": "errors",
    "load_images": "load", "ImageRef": "reference", "parse_reference": "reference",
    "Image": "store", "ImageStore": "store",
}  # fmt: skip

__all__ = [
    "BadImage", "CacheBusy", "CachedImage", "Image", "ImageCache", "ImageConfig", "ImageError",
    "ImageNotFound", "ImageRef", "ImageStore", "RegistryAuthError", "RegistryUnreachable",
    "load_images", "main_argv", "parse_reference", "resolve_user",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
