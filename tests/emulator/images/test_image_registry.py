"""The registry client and the store against a real registry server on loopback."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest
from image_builder import Image, Layer, busybox_layer, make_image
from image_registry import TestRegistry

from pytest_northflank.emulator.images import (
    BadImage,
    ImageCache,
    ImageNotFound,
    ImageStore,
    RegistryAuthError,
    RegistryUnreachable,
    parse_reference,
)
from pytest_northflank.emulator.images.credentials import SavedCredential, load_docker_auths
from pytest_northflank.emulator.images.registry import this_platform


def small_image(marker: bytes = b"1", **config: object) -> Image:
    return make_image(Layer().directory("etc").file("etc/marker", marker), **config)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
        ("ubuntu", "docker.io/library/ubuntu:latest"),
        ("user/app:1", "docker.io/user/app:1"),
        ("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest"),
        ("localhost/app:x", "localhost/app:x"),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64),
    ],
)
def test_reference_names(text: str, name: str) -> None:
    assert parse_reference(text).name == name


def test_pull_with_anonymous_token(registry: TestRegistry, cache: ImageCache) -> None:
    image = small_image(Env=["A=1"], WorkingDir="/etc", Cmd=["true"])
    digest = registry.push("team/app", "v1", image)
    pulled = ImageStore(cache).get(f"{registry.address}/team/app:v1")
    assert pulled.pulled
    assert pulled.digest == digest
    assert (pulled.layers[0] / "etc/marker").read_bytes() == b"1"
    assert (pulled.config.env, pulled.config.workdir, pulled.config.cmd) == (
        {"A": "1"}, "/etc", ("true",))  # fmt: skip
    again = ImageStore(cache).get(f"{registry.address}/team/app:v1")
    assert not again.pulled
    assert registry.blob_hits(image) == [1, 1]


def test_docker_media_types(registry: TestRegistry, cache: ImageCache) -> None:
    image = make_image(Layer().file("x", b"docker"), docker=True)
    registry.push("d/app", "1", image)
    assert (ImageStore(cache).get(f"{registry.address}/d/app:1").layers[0] / "x").exists()


def test_basic_credentials_for_the_token(tmp_path: Path, cache: ImageCache) -> None:
    server = TestRegistry(users={"ci": "s3cret"})
    try:
        server.push("private/app", "1", small_image())
        name = f"{server.address}/private/app:1"
        with pytest.raises(RegistryAuthError, match="refused"):
            ImageStore(cache).get(name)  # no credentials
        wrong = {"bad": SavedCredential("ci", "nope")}
        with pytest.raises(RegistryAuthError, match="refused the credentials"):
            ImageStore(cache, saved_credentials=wrong).get(name, "bad")
        good = {"cred-1": SavedCredential("ci", "s3cret")}
        assert ImageStore(cache, saved_credentials=good).get(name, "cred-1").pulled
        config = tmp_path / "config.json"
        auth = {"auths": {server.address: {"auth": "Y2k6czNjcmV0"}}}  # ci:s3cret
        config.write_text(json.dumps(auth))
        other = ImageCache(tmp_path / "other")
        assert ImageStore(other, docker_auths=load_docker_auths(config)).get(name).pulled
    finally:
        server.close()


def test_missing_tag_is_not_found_with_the_registry_answer(
    registry: TestRegistry, cache: ImageCache
) -> None:
    registry.push("team/app", "v1", small_image())
    with pytest.raises(ImageNotFound) as caught:
        ImageStore(cache).get(f"{registry.address}/team/app:v2")
    assert caught.value.image == f"{registry.address}/team/app:v2"
    assert "MANIFEST_UNKNOWN" in caught.value.answer
    assert "check the image name and tag" in str(caught.value)


def test_index_resolved_to_this_platform(registry: TestRegistry, cache: ImageCache) -> None:
    _os_name, arch, _ = this_platform()
    other = "arm64" if arch != "arm64" else "amd64"
    mine, theirs = small_image(b"mine"), small_image(b"theirs")
    registry.push_index("multi/app", "1", [(theirs, "linux", other), (mine, "linux", arch)])
    pulled = ImageStore(cache).get(f"{registry.address}/multi/app:1")
    assert (pulled.layers[0] / "etc/marker").read_bytes() == b"mine"
    assert registry.blob_hits(theirs)[1] == 0  # the other platform's layer is never fetched
    registry.push_index("multi/only", "1", [(theirs, "linux", other)])
    with pytest.raises(BadImage, match=f"no manifest for linux/{arch}"):
        ImageStore(cache).get(f"{registry.address}/multi/only:1")


def test_damaged_blob_is_refused(registry: TestRegistry, cache: ImageCache) -> None:
    image = small_image()
    registry.push("team/app", "1", image)
    registry.corrupt.add(list(image.blobs())[1])
    with pytest.raises(BadImage, match="failed verification"):
        ImageStore(cache).get(f"{registry.address}/team/app:1")
    assert not any((cache.root / "layers").iterdir())


def test_transient_failures_are_retried(registry: TestRegistry, cache: ImageCache) -> None:
    registry.push("team/app", "1", small_image())
    registry.fail_next["manifests"] = 1
    registry.fail_next["blobs"] = 2
    assert ImageStore(cache).get(f"{registry.address}/team/app:1").pulled


def test_unreachable_registry(cache: ImageCache) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(RegistryUnreachable, match="cannot reach"):
        ImageStore(cache).get(f"127.0.0.1:{port}/team/app:1")


def test_plain_http_only_for_local_or_insecure_registries(cache: ImageCache) -> None:
    server = TestRegistry(host="127.0.0.2")  # not "localhost": HTTPS unless named insecure
    try:
        server.push("team/app", "1", small_image())
        name = f"{server.address}/team/app:1"
        with pytest.raises(RegistryUnreachable):
            ImageStore(cache).get(name)
        assert ImageStore(cache, insecure=frozenset({server.address})).get(name).pulled
    finally:
        server.close()


def test_mirror_serves_docker_hub_names(registry: TestRegistry, cache: ImageCache) -> None:
    registry.push("library/busyish", "1.0", small_image(b"mirrored"))
    store = ImageStore(cache, mirror=f"http://{registry.address}")
    pulled = store.get("busyish:1.0")
    assert pulled.name == "docker.io/library/busyish:1.0"
    assert (pulled.layers[0] / "etc/marker").read_bytes() == b"mirrored"


def test_cached_tag_used_offline_latest_rechecked(cache: ImageCache) -> None:
    server = TestRegistry()
    server.push("team/app", "1", small_image())
    server.push("team/app", "latest", small_image(b"latest"))
    ImageStore(cache).get(f"{server.address}/team/app:1")
    ImageStore(cache).get(f"{server.address}/team/app")
    server.close()
    assert not ImageStore(cache).get(f"{server.address}/team/app:1").pulled
    assert not ImageStore(cache).get(f"{server.address}/team/app:latest").pulled


def test_busybox_userland_pulls(registry: TestRegistry, cache: ImageCache) -> None:
    image = make_image(busybox_layer())
    registry.push("tiny/busybox", "1", image)
    pulled = ImageStore(cache).get(f"{registry.address}/tiny/busybox:1")
    assert (pulled.layers[0] / "bin/busybox").stat().st_size > 100_000


def test_zstd_layers_when_the_library_is_there(registry: TestRegistry, cache: ImageCache) -> None:
    zstandard = pytest.importorskip("zstandard")
    image = small_image(b"zstd")
    tar = gzip.decompress(image.layers[0])
    image.layers[0] = zstandard.ZstdCompressor().compress(tar)
    registry.push("team/zstd", "1", image)
    pulled = ImageStore(cache).get(f"{registry.address}/team/zstd:1")
    assert (pulled.layers[0] / "etc/marker").read_bytes() == b"zstd"
