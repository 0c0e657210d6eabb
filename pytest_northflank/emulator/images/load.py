"""``pytest-northflank images load FILE``: images carried in as files, for offline CI.

Takes a ``docker save`` tarball (``manifest.json`` naming config, tags and layers), an OCI
image layout directory (``oci-layout``, ``index.json``, ``blobs/``) or a tar of one. Every
blob is checked against its digest where the format names one; layers of the older
``docker save`` format, which names none, are keyed by the digest of their bytes.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pytest_northflank.emulator.images.cache import ImageCache
from pytest_northflank.emulator.images.errors import BadImage
from pytest_northflank.emulator.images.reference import parse_reference
from pytest_northflank.emulator.images.registry import INDEXES, pick_platform, this_platform
from pytest_northflank.emulator.images.unpack import LayerError
from pytest_northflank.tarsafety import member_parts

Opener = Callable[[str], IO[bytes]]  # archive-relative path -> readable stream


def load_images(
    path: Path, cache: ImageCache, *, name: str | None = None,
    platform: tuple[str, str, str | None] | None = None,
) -> list[str]:  # fmt: skip
    """Load every image in ``path`` into ``cache``; returns their canonical names.

    ``name`` names an image that the archive leaves unnamed (or renames a single one).
    """
    platform = platform or this_platform()
    if path.is_dir():
        return _load(path.name, lambda rel: open(_inside(path, rel), "rb"), cache, name, platform)
    try:
        archive = tarfile.open(path)  # noqa: SIM115  closed below, once it opened
    except (OSError, tarfile.TarError):
        raise BadImage(str(path), "not a docker save tarball or an OCI layout (not a tar "
                       "archive, nor a directory)") from None  # fmt: skip
    with archive:

        def opener(rel: str) -> IO[bytes]:
            member = archive.extractfile("/".join(member_parts(rel)))
            if member is None:
                raise KeyError(rel)
            return member

        return _load(path.name, opener, cache, name, platform)


def _inside(root: Path, rel: str) -> Path:
    return root.joinpath(*member_parts(rel))


def _load(
    label: str, opener: Opener, cache: ImageCache, name: str | None,
    platform: tuple[str, str, str | None],
) -> list[str]:  # fmt: skip
    try:
        with opener("manifest.json") as handle:
            entries = json.load(handle)
        return _load_docker(label, entries, opener, cache, name)
    except KeyError:
        pass  # not a docker save archive
    except FileNotFoundError:
        pass
    try:
        with opener("index.json") as handle:
            index = json.load(handle)
    except (KeyError, FileNotFoundError):
        raise BadImage(label, "neither a docker save archive (manifest.json) nor an OCI "
                       "layout (index.json)") from None  # fmt: skip
    return _load_oci(label, index, opener, cache, name, platform)


def _load_docker(
    label: str, entries: Any, opener: Opener, cache: ImageCache, name: str | None
) -> list[str]:
    if not isinstance(entries, list) or not entries:
        raise BadImage(label, "manifest.json lists no image")
    loaded = []
    for entry in entries:
        config_path = str(entry["Config"])
        config_digest = _copy_blob(label, opener, config_path, None, cache)
        layers = [_copy_layer(label, opener, str(p), _digest_in(str(p)), cache)
                  for p in entry["Layers"]]  # fmt: skip
        tags = list(entry.get("RepoTags") or [])
        if name is not None and len(entries) == 1:
            tags = [name]
        if not tags:
            raise BadImage(label, "an image in the archive has no tag", "give one with --name")
        for tag in tags:
            canonical = parse_reference(tag).name
            cache.record(canonical, config_digest, config_digest, layers)
            loaded.append(canonical)
    return loaded


def _load_oci(
    label: str, index: Any, opener: Opener, cache: ImageCache, name: str | None,
    platform: tuple[str, str, str | None],
) -> list[str]:  # fmt: skip
    loaded = []
    for entry in index.get("manifests") or []:
        annotations = entry.get("annotations") or {}
        tag = (
            name
            or annotations.get("io.containerd.image.name")
            or annotations.get("org.opencontainers.image.ref.name")
        )
        if not tag:
            raise BadImage(label, "an image in the layout has no name", "give one with --name")
        digest = str(entry["digest"])
        document = _read_json_blob(label, opener, digest)
        if document.get("mediaType") in INDEXES or "manifests" in document:
            digest = pick_platform(tag, document, platform)
            document = _read_json_blob(label, opener, digest)
        config_digest = _copy_blob(label, opener, _blob_path(document["config"]["digest"]),
                                   document["config"]["digest"], cache)  # fmt: skip
        layers = [_copy_layer(label, opener, _blob_path(layer["digest"]), layer["digest"], cache)
                  for layer in document["layers"]]  # fmt: skip
        canonical = parse_reference(tag).name
        cache.record(canonical, digest, config_digest, layers)
        loaded.append(canonical)
    return loaded


def _blob_path(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"blobs/{algorithm}/{value}"


def _digest_in(path: str) -> str | None:
    """``blobs/sha256/<hex>`` names its digest; ``<id>/layer.tar`` does not."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256":
        return f"sha256:{parts[2]}"
    return None


def _read_json_blob(label: str, opener: Opener, digest: str) -> dict[str, Any]:
    with opener(_blob_path(digest)) as handle:
        data = handle.read(4 << 20)
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise BadImage(label, f"blob {digest} does not match its digest")
    document: dict[str, Any] = json.loads(data)
    return document


def _digest_of(opener: Opener, path: str) -> str:
    hasher = hashlib.sha256()
    with opener(path) as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _copier(label: str, opener: Opener, path: str, digest: str) -> Callable[[Path], None]:
    def copy(destination: Path) -> None:
        hasher = hashlib.sha256()
        with opener(path) as source, open(destination, "wb") as out:
            while chunk := source.read(1 << 20):
                hasher.update(chunk)
                out.write(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            raise BadImage(label, f"{path} does not match its digest {digest}")

    return copy


def _copy_blob(label: str, opener: Opener, path: str, digest: str | None, cache: ImageCache) -> str:
    digest = digest or _digest_of(opener, path)
    cache.ensure_blob(digest, _copier(label, opener, path, digest))
    return digest


def _copy_layer(
    label: str, opener: Opener, path: str, digest: str | None, cache: ImageCache
) -> str:
    digest = digest or _digest_of(opener, path)
    try:
        cache.ensure_layer(digest, _copier(label, opener, path, digest))
    except LayerError as exc:
        raise BadImage(label, f"layer {path}: {exc}") from None
    return digest


__all__ = ["load_images"]
