"""The cache across processes, loading image files, listing and pruning."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from image_builder import Layer, docker_save, make_image, oci_layout
from image_registry import TestRegistry

from pytest_northflank.emulator.images import CacheBusy, ImageCache, ImageStore, load_images

PULL = """
import sys
from pathlib import Path
from pytest_northflank.emulator.images import ImageCache, ImageStore
ImageStore(ImageCache(Path(sys.argv[1]))).get(sys.argv[2])
"""


def test_parallel_pulls_fetch_each_blob_once(tmp_path: Path) -> None:
    server = TestRegistry(blob_delay=0.3)  # slow blobs: the pulls overlap for sure
    try:
        image = make_image(*(Layer().file(f"f{n}", bytes([n]) * 1000) for n in range(3)))
        server.push("team/app", "1", image)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    PULL,
                    str(tmp_path / "cache"),
                    f"{server.address}/team/app:1",
                ],
                env=env,
            )
            for _ in range(4)
        ]
        assert [w.wait(120) for w in workers] == [0, 0, 0, 0]
        assert server.blob_hits(image) == [1, 1, 1, 1]  # config + three layers, once each
        assert server.hits["manifests:1"] == 4
    finally:
        server.close()


def test_cache_files_are_private(registry: TestRegistry, cache: ImageCache) -> None:
    registry.push("team/app", "1", make_image(Layer().file("x", b"1")))
    ImageStore(cache).get(f"{registry.address}/team/app:1")
    assert stat.S_IMODE(os.stat(cache.root).st_mode) == 0o700
    for path in [*(cache.root / "images").iterdir(), *(cache.root / "blobs/sha256").iterdir()]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_docker_save_tarball_loads_and_runs_offline(tmp_path: Path, cache: ImageCache) -> None:
    image = make_image(Layer().file("from-tarball", b"yes"), Cmd=["true"])
    archive = docker_save(image, "ubuntu:22.04", tmp_path / "ubuntu.tar")
    assert load_images(archive, cache) == ["docker.io/library/ubuntu:22.04"]
    loaded = ImageStore(cache).get("ubuntu:22.04")  # Docker Hub is never asked: it is cached
    assert not loaded.pulled
    assert (loaded.layers[0] / "from-tarball").read_bytes() == b"yes"
    assert loaded.config.cmd == ("true",)


def test_oci_layout_directory_loads(tmp_path: Path, cache: ImageCache) -> None:
    image = make_image(Layer().file("from-oci", b"yes"))
    layout = oci_layout(image, "example.com/team/tool:2", tmp_path / "layout")
    assert load_images(layout, cache) == ["example.com/team/tool:2"]
    assert (ImageStore(cache).get("example.com/team/tool:2").layers[0] / "from-oci").exists()


def test_prune_drops_least_recently_used(registry: TestRegistry, cache: ImageCache) -> None:
    store = ImageStore(cache)
    for tag in ("old", "new"):
        registry.push("team/app", tag, make_image(Layer().file(tag, b"x" * 50_000)))
        store.get(f"{registry.address}/team/app:{tag}")
    removed, freed = cache.prune(max_bytes=60_000)
    assert removed == [f"{registry.address}/team/app:old"]
    assert freed >= 50_000
    assert [i.name for i in cache.images()] == [f"{registry.address}/team/app:new"]
    cache.hold()  # an emulator is using the cache
    try:
        with pytest.raises(CacheBusy, match="in use"):
            ImageCache(cache.root).prune(0)
    finally:
        cache.release()
    assert cache.prune(0)[0] == [f"{registry.address}/team/app:new"]
    assert list((cache.root / "layers").iterdir()) == []
