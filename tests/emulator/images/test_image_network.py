"""Sandboxes made from images are on the emulator's private network too: /etc/hosts is
there even when the image has none, and one image sandbox reaches another by service id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_testing import Api, eventually, service_body, unique_name
from image_builder import Image, Layer, busybox_layer, make_image
from image_registry import TestRegistry

from pytest_northflank.client import NorthflankClient
from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.images.options import ImageOptions
from pytest_northflank.emulator.runtime import probe_namespaces

PROJECT = "default-project"
pytestmark = pytest.mark.skipif(
    not probe_namespaces()[0], reason="images and networks need namespace isolation"
)


@pytest.fixture
def emulator_with_images(tmp_path: Path) -> Iterator[EmulatorServer]:
    images = ImageOptions(cache_dir=tmp_path / "image-cache")
    server = EmulatorServer(isolation="namespace", images=images).start()
    yield server
    server.stop()


def bare_image() -> Image:
    # No /etc at all: the emulator must make /etc/hosts in the sandbox's own layer.
    return make_image(busybox_layer(), Layer().directory("srv"), Env=["PATH=/bin"],
                      Cmd=["sleep", "1000"])  # fmt: skip


def test_image_sandboxes_reach_each_other_by_service_id(
    emulator_with_images: EmulatorServer, registry: TestRegistry, busybox_image: Image
) -> None:
    registry.push("tiny/bare", "1", bare_image())
    server = emulator_with_images
    with Api(server) as api, NorthflankClient(server.token, base_url=server.url) as client:
        ids = []
        for prefix in ("img-web", "img-cli"):
            body = service_body(unique_name(prefix), None)
            body["deployment"]["external"]["imagePath"] = f"{registry.address}/tiny/bare:1"
            created = api.ok("POST", f"/v1/projects/{PROJECT}/services/deployment", json=body)
            service = api.wait_status(created["id"], timeout=60)
            assert service["status"]["deployment"]["status"] == "COMPLETED", service
            ids.append(created["id"])
        web, cli = ids
        serve = client.run(PROJECT, web, "echo from-image > /srv/index.html; httpd -p 8000 -h /srv")
        assert serve.exit_code == 0, serve
        hosts = client.run(PROJECT, cli, "cat /etc/hosts").stdout.decode()
        assert f" {web}" in hosts or f"\t{web}" in hosts, hosts

        def fetched() -> bool:
            result = client.run(PROJECT, cli, f"wget -q -O - http://{web}:8000/index.html")
            return result.stdout == b"from-image\n"

        assert eventually(fetched)
        for service_id in ids:
            api.delete(service_id)
