"""Builds small OCI images in memory: layers from a static busybox (or any files), configs,
manifests, indexes, and the ``docker save`` and OCI layout files made from them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "env", "pwd", "id", "sleep", "echo", "test", "stat", "true",
           "mkdir", "readlink", "hostname", "wc", "touch", "rm")  # fmt: skip


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def have_busybox() -> bool:
    return os.path.exists(BUSYBOX) and b"statically linked" in _file_type(BUSYBOX)


def _file_type(path: str) -> bytes:
    # ELF without PT_INTERP is static; checking for the interpreter string is enough here.
    with open(path, "rb") as handle:
        head = handle.read(4096)
    return b"dynamic" if b"ld-linux" in head else b"statically linked"


class Layer:
    """A tar layer under construction (member order is kept, as in real layers)."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(  # noqa: SIM115  closed by tar()
            fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT
        )

    def add(self, info: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        if data is not None:
            info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def directory(self, name: str, mode: int = 0o755) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        return self.add(info)

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Layer:
        info = tarfile.TarInfo(name)
        info.mode, info.uid, info.gid = mode, uid, gid
        return self.add(info, data)

    def symlink(self, name: str, target: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        return self.add(info)

    def hardlink(self, name: str, target: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.LNKTYPE, target
        return self.add(info)

    def device(self, name: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        return self.add(info)

    def whiteout(self, name: str) -> Layer:
        directory, _, base = name.rpartition("/")
        return self.file(f"{directory}/.wh.{base}" if directory else f".wh.{base}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def tar(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()


def busybox_layer() -> Layer:
    """A minimal userland: /bin/busybox, applet links, /etc/passwd with a user ``app``."""
    layer = Layer()
    for name in ("bin", "etc", "tmp", "root", "home", "home/app", "srv"):
        layer.directory(name, 0o1777 if name == "tmp" else 0o755)
    with open(BUSYBOX, "rb") as handle:
        layer.file("bin/busybox", handle.read(), 0o755)
    for applet in APPLETS:
        layer.symlink(f"bin/{applet}", "/bin/busybox")  # absolute, as real images have
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    layer.file("etc/group", b"root:x:0:\napp:x:1000:\n")
    layer.file("etc/os-release", b"ID=testimage\n")
    return layer


@dataclass
class Image:
    layers: list[bytes]  #: gzip-compressed layer blobs, bottom first
    config: dict[str, Any]
    docker_media_types: bool = False
    diff_ids: list[str] = field(default_factory=list)

    @property
    def config_bytes(self) -> bytes:
        document = {
            "architecture": self.config.get("architecture", "amd64"),
            "os": "linux",
            "config": {k: v for k, v in self.config.items() if k != "architecture"},
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
        }
        return json.dumps(document).encode()

    def manifest_bytes(self) -> bytes:
        layer_type = DOCKER_LAYER if self.docker_media_types else OCI_LAYER_GZIP
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if self.docker_media_types else OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(self.config_bytes),
                       "size": len(self.config_bytes)},
            "layers": [{"mediaType": layer_type, "digest": digest_of(b), "size": len(b)}
                       for b in self.layers],
        }  # fmt: skip
        return json.dumps(document).encode()

    def blobs(self) -> dict[str, bytes]:
        return {digest_of(b): b for b in [self.config_bytes, *self.layers]}


def make_image(*layers: Layer, docker: bool = False, **config: Any) -> Image:
    tars = [layer.tar() for layer in layers]
    compressed = [gzip.compress(t, mtime=0) for t in tars]
    return Image(compressed, config, docker, [digest_of(t) for t in tars])


def index_bytes(entries: list[tuple[bytes, str, str]]) -> bytes:
    """An OCI index of (manifest bytes, os, architecture)."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest_of(m), "size": len(m),
                       "platform": {"os": o, "architecture": a}} for m, o, a in entries],
    }).encode()  # fmt: skip


def docker_save(image: Image, tag: str, path: Path) -> Path:
    """A ``docker save`` tarball (legacy layout: ``<id>/layer.tar``, uncompressed layers)."""
    with tarfile.open(path, "w") as out:
        layer_paths = []
        for number, blob in enumerate(image.layers):
            name = f"{number:02d}{'a' * 62}/layer.tar"
            _add_bytes(out, name, gzip.decompress(blob))
            layer_paths.append(name)
        config_name = digest_of(image.config_bytes).split(":")[1] + ".json"
        _add_bytes(out, config_name, image.config_bytes)
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layer_paths}]
        _add_bytes(out, "manifest.json", json.dumps(manifest).encode())
    return path


def oci_layout(image: Image, tag: str, directory: Path) -> Path:
    """An OCI image layout directory naming the image ``tag`` (containerd's annotation)."""
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "blobs" / "sha256").mkdir(parents=True)
    manifest = image.manifest_bytes()
    for blob in [*image.blobs().values(), manifest]:
        (directory / "blobs" / "sha256" / digest_of(blob).split(":")[1]).write_bytes(blob)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(manifest), "size": len(manifest),
         "annotations": {"io.containerd.image.name": tag}}]}  # fmt: skip
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
