"""Sandboxes of the emulator made from pulled or loaded images, over its REST and exec API."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulator_testing import Api, eventually, service_body, unique_name
from image_builder import Image, Layer, busybox_layer, docker_save, make_image
from image_registry import TestRegistry

from pytest_northflank.client import NorthflankClient
from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.images import ImageCache, load_images
from pytest_northflank.emulator.images.options import ImageOptions

PROJECT = "default-project"


def namespaces_available() -> bool:
    from pytest_northflank.emulator.runtime import probe_namespaces

    return probe_namespaces()[0]


needs_namespaces = pytest.mark.skipif(
    not namespaces_available(), reason="images need namespace isolation"
)


@pytest.fixture
def image_cache(tmp_path: Path) -> Path:
    return tmp_path / "image-cache"


def start_emulator(cache: Path, isolation: str = "namespace", **options: Any) -> EmulatorServer:
    images = ImageOptions(cache_dir=cache, **options)
    return EmulatorServer(isolation=isolation, images=images).start()  # type: ignore[arg-type]


@pytest.fixture
def emulator_with_images(image_cache: Path) -> Iterator[EmulatorServer]:
    server = start_emulator(image_cache)
    yield server
    server.stop()


def create(api: Api, image: str, docker: dict[str, Any] | None = None) -> dict[str, Any]:
    body = service_body(unique_name("img"), None)
    body["deployment"]["external"]["imagePath"] = image
    if docker is not None:
        body["deployment"]["docker"] = docker
    created = api.ok("POST", f"/v1/projects/{PROJECT}/services/deployment", json=body)
    service: dict[str, Any] = api.wait_status(created["id"], timeout=60)
    return service


def run(server: EmulatorServer, service_id: str, command: str) -> str:
    with NorthflankClient(server.token, base_url=server.url) as client:
        result = client.run(PROJECT, service_id, command)
    assert result.exit_code == 0, result
    return result.stdout.decode()


def userland_image() -> Image:
    top = Layer().directory("etc").whiteout("etc/os-release").file("srv/app/data.txt", b"42")
    return make_image(
        busybox_layer(),
        top,
        Env=["PATH=/bin", "GREETING=from-image"],
        WorkingDir="/srv/app",
        User="app",
        Entrypoint=["sh", "-c"],
        Cmd=["echo main started in $(pwd) as $(id -un); exec sleep 1000"],
    )


@needs_namespaces
def test_filesystem_env_workdir_and_command_come_from_the_image(
    emulator_with_images: EmulatorServer, registry: TestRegistry, busybox_image: Image
) -> None:
    registry.push("tiny/userland", "1", userland_image())
    with Api(emulator_with_images) as api:
        service = create(api, f"{registry.address}/tiny/userland:1")
        assert service["status"]["deployment"]["status"] == "COMPLETED", service
        sid = service["id"]
        out = run(emulator_with_images, sid, "pwd; id -un; echo $GREETING; cat data.txt; echo")
        assert out.split("\n")[:4] == ["/srv/app", "app", "from-image", "42"]
        assert "python3" not in run(emulator_with_images, sid, "ls /usr/bin 2>&1 || true")
        # the whiteout in the top layer hides the lower layer's file
        assert "gone" in run(emulator_with_images, sid, "test -e /etc/os-release || echo gone")
        container = emulator_with_images.runtime.containers()[0]
        wanted = ["main started in /srv/app as app"]
        assert eventually(lambda: [r.text for r in container.log_lines()] == wanted)
        api.delete(sid)


@needs_namespaces
def test_custom_command_replaces_cmd_and_keeps_the_entrypoint(
    emulator_with_images: EmulatorServer, registry: TestRegistry
) -> None:
    registry.push("tiny/userland", "1", userland_image())
    with Api(emulator_with_images) as api:
        docker = {"configType": "customCommand", "customCommand": "'echo custom; sleep 1000'"}
        service = create(api, f"{registry.address}/tiny/userland:1", docker)
        assert service["status"]["deployment"]["status"] == "COMPLETED", service
        container = emulator_with_images.runtime.containers()[0]
        assert eventually(lambda: [r.text for r in container.log_lines()] == ["custom"])
        api.delete(service["id"])


@needs_namespaces
def test_missing_tag_fails_the_deployment_with_the_registry_answer(
    emulator_with_images: EmulatorServer, registry: TestRegistry
) -> None:
    registry.push("tiny/userland", "1", userland_image())
    with Api(emulator_with_images) as api:
        service = create(api, f"{registry.address}/tiny/userland:nope")
    status = service["status"]["deployment"]
    assert status["status"] == "FAILED"
    message = emulator_with_images.state.to_json()["services"][0]["message"]
    assert f"{registry.address}/tiny/userland:nope" in message
    assert "MANIFEST_UNKNOWN" in message
    assert "check the image name and tag" in message


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@needs_namespaces
def test_unreachable_registry_falls_back_to_the_host_loudly(image_cache: Path) -> None:
    server = start_emulator(image_cache)
    port = closed_port()
    image = f"127.0.0.1:{port}/team/app:1"
    try:
        with Api(server) as api:
            docker = {"configType": "customCommand", "customCommand": "sleep 1000"}
            service = create(api, image, docker)
            assert service["status"]["deployment"]["status"] == "COMPLETED"
            assert "python3" in run(server, service["id"], "ls /usr/bin")  # the host's userland
        reason = f"cannot reach http://127.0.0.1:{port}: [Errno 111] Connection refused"
        assert server.control.info()["imageFallbacks"] == [
            {
                "image": image,
                "reason": reason,
                "notice": f"image {image} not available offline: using this machine's "
                f"userland ({reason})",
            }
        ]
    finally:
        server.stop()
    strict = start_emulator(image_cache, require=True)
    try:
        with Api(strict) as api:
            service = create(api, image)
        assert service["status"]["deployment"]["status"] == "FAILED"
        assert "cannot reach" in strict.state.to_json()["services"][0]["message"]
    finally:
        strict.stop()


@needs_namespaces
def test_loaded_docker_save_replaces_the_host_fallback_for_the_default_image(
    tmp_path: Path, image_cache: Path, busybox_image: Image
) -> None:
    load_images(docker_save(busybox_image, "ubuntu:22.04", tmp_path / "u.tar"),
                ImageCache(image_cache))  # fmt: skip
    server = start_emulator(image_cache)  # Docker Hub is unreachable here: the cache serves
    try:
        with Api(server) as api:
            service = create(api, "ubuntu:22.04", {"configType": "customCommand",
                                                   "customCommand": "sleep 1000"})  # fmt: skip
            assert service["status"]["deployment"]["status"] == "COMPLETED"
            assert run(server, service["id"], "cat /etc/os-release") == "ID=testimage\n"
            assert run(server, service["id"], "echo $GREETING; pwd") == "from-image\n/srv\n"
        assert server.control.info()["imageFallbacks"] == []
    finally:
        server.stop()


def test_directory_isolation_uses_the_host_and_says_why(
    image_cache: Path, registry: TestRegistry, busybox_image: Image
) -> None:
    registry.push("tiny/busybox", "1", busybox_image)
    server = start_emulator(image_cache, isolation="directory")
    image = f"{registry.address}/tiny/busybox:1"
    try:
        with Api(server) as api:
            service = create(api, image, {"configType": "customCommand",
                                          "customCommand": "sleep 1000"})  # fmt: skip
            assert service["status"]["deployment"]["status"] == "COMPLETED"
        (fallback,) = server.control.info()["imageFallbacks"]
        assert fallback["notice"] == (
            f"image {image} not available offline: using this machine's userland "
            "(directory isolation cannot run images)"
        )
        assert registry.hits == {}  # nothing is pulled that could not be used
    finally:
        server.stop()


def test_images_follow_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_northflank.emulator.images.options import options_from_environment
    from pytest_northflank.errors import ConfigError

    monkeypatch.setenv("NF_EMULATOR_IMAGES", "require")
    assert (options_from_environment().enabled, options_from_environment().require) == (True, True)
    monkeypatch.setenv("NF_EMULATOR_IMAGES", "off")
    assert not options_from_environment().enabled
    monkeypatch.setenv("NF_EMULATOR_IMAGES", "sometimes")
    with pytest.raises(ConfigError, match="NF_EMULATOR_IMAGES='sometimes': expected pull"):
        options_from_environment()


def test_the_directory_runtime_refuses_an_image(
    registry: TestRegistry, cache: ImageCache, busybox_image: Image, tmp_path: Path
) -> None:
    from pytest_northflank.emulator.images import ImageStore
    from pytest_northflank.emulator.runtime import ContainerRuntime
    from pytest_northflank.errors import EmulatorError

    registry.push("tiny/busybox", "1", busybox_image)
    image = ImageStore(cache).get(f"{registry.address}/tiny/busybox:1")
    with ContainerRuntime("directory", tmp_path / "state") as runtime:
        with pytest.raises(EmulatorError, match="needs namespace isolation; directory isolation"):
            runtime.start("box", ["true"], {}, image=image)
        assert runtime.containers() == []
