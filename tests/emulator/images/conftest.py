"""Fixtures for the image tests: a test registry, a private cache, the busybox userland."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from image_builder import Image, busybox_layer, have_busybox, make_image
from image_registry import TestRegistry

from pytest_northflank.emulator.images import ImageCache


@pytest.fixture
def registry() -> Iterator[TestRegistry]:
    server = TestRegistry()
    yield server
    server.close()


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "cache")


@pytest.fixture
def busybox_image() -> Image:
    if not have_busybox():
        pytest.skip("no static /bin/busybox (apt-get install busybox-static)")
    return make_image(busybox_layer(), Env=["PATH=/bin", "GREETING=from-image"],
                      WorkingDir="/srv", Cmd=["sh", "-c", "echo started; sleep 1000"])  # fmt: skip
