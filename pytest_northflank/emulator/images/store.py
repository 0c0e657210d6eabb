"""Getting an image for a sandbox: from the cache, else from its registry.

Pull policy as Kubernetes' default: a tag other than ``latest`` (or a digest) is used from
the cache when present, without asking the registry; ``latest`` is checked with the registry
each time (one manifest request) and the cache is used when the registry cannot be reached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_northflank.emulator.images.cache import CachedImage, ImageCache
from pytest_northflank.emulator.images.config import ImageConfig
from pytest_northflank.emulator.images.credentials import Auth, SavedCredential
from pytest_northflank.emulator.images.errors import (
    BadImage,
    RegistryAuthError,
    RegistryUnreachable,
)
from pytest_northflank.emulator.images.reference import ImageRef, parse_reference
from pytest_northflank.emulator.images.registry import RegistryClient
from pytest_northflank.emulator.images.unpack import LayerError


@dataclass(frozen=True)
class Image:
    """An image ready to run: its layers unpacked in the cache."""

    name: str  #: canonical name (``docker.io/library/ubuntu:22.04``)
    digest: str  #: manifest digest (the config digest for a loaded ``docker save``)
    config: ImageConfig
    layers: tuple[Path, ...]  #: unpacked layer directories, bottom first
    pulled: bool  #: fetched from the registry now (False: from the cache)


class ImageStore:
    """Thread-safe; several processes may share one cache directory."""

    def __init__(
        self,
        cache: ImageCache,
        *,
        insecure: frozenset[str] = frozenset(),
        mirror: str | None = None,
        saved_credentials: Mapping[str, SavedCredential] | None = None,
        docker_auths: Mapping[str, Auth] | None = None,
        platform: tuple[str, str, str | None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.cache = cache
        self._insecure = insecure
        self._mirror = mirror
        self._saved = dict(saved_credentials or {})
        self._docker_auths = dict(docker_auths or {})
        self._platform = platform
        self._timeout = timeout
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def get(self, image: str, credential_id: str | None = None) -> Image:
        """The image, pulled if needed. Raises an :class:`ImageError` subclass; the caller
        decides what a :class:`RegistryUnreachable` means (host fallback, or failure)."""
        try:
            ref = parse_reference(image)
        except ValueError as exc:
            raise BadImage(image, str(exc)) from None
        with self._lock_for(ref.name):
            cached = self.cache.lookup(ref.name)
            if cached is not None and ref.tag != "latest":
                return self._ready(cached, pulled=False)
            try:
                return self._pull(ref, credential_id)
            except RegistryUnreachable:
                if cached is None:
                    raise
                return self._ready(cached, pulled=False)  # "latest", offline: the cached one

    def cached(self, image: str) -> Image | None:
        """The image from the cache alone (no network), or None."""
        try:
            found = self.cache.lookup(parse_reference(image).name)
        except ValueError:
            return None
        return None if found is None else self._ready(found, pulled=False)

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def _ready(self, cached: CachedImage, *, pulled: bool) -> Image:
        self.cache.touch(cached)
        return Image(
            name=cached.name,
            digest=cached.manifest_digest,
            config=ImageConfig.from_json(self.cache.config(cached)),
            layers=tuple(self.cache.layer_dir(d) for d in cached.layer_digests),
            pulled=pulled,
        )

    def _pull(self, ref: ImageRef, credential_id: str | None) -> Image:
        with RegistryClient(
            credentials=self._credentials_for(ref, credential_id),
            insecure=self._insecure,
            mirror=self._mirror,
            platform=self._platform,
            timeout=self._timeout,
        ) as client:
            manifest = client.manifest(ref)
            config_digest = str(manifest.config["digest"])
            self.cache.ensure_blob(
                config_digest, lambda path: client.blob(ref, manifest.config, path)
            )
            digests = []
            for descriptor in manifest.layers:
                digest = str(descriptor["digest"])
                try:
                    self.cache.ensure_layer(digest, _fetcher(client, ref, descriptor))
                except LayerError as exc:
                    raise BadImage(ref.name, f"layer {digest[:19]}: {exc}") from None
                digests.append(digest)
        record = self.cache.record(ref.name, manifest.digest, config_digest, digests)
        return self._ready(record, pulled=True)

    def _credentials_for(self, ref: ImageRef, credential_id: str | None) -> _Credentials:
        if credential_id is not None:
            saved = self._saved.get(credential_id)
            if saved is None:
                raise RegistryAuthError(
                    ref.name,
                    f"no registry credentials with id {credential_id!r}",
                    "the emulator reads them from its --registry-credentials file",
                )
            return _Credentials({ref.registry: (saved.username, saved.password)})
        return _Credentials(self._docker_auths)


class _Credentials:
    def __init__(self, by_host: Mapping[str, Auth]) -> None:
        self._by_host = dict(by_host)

    def __call__(self, host: str) -> Auth | None:
        return self._by_host.get(host)


def _fetcher(
    client: RegistryClient, ref: ImageRef, descriptor: dict[str, Any]
) -> Callable[[Path], None]:
    def fetch(path: Path) -> None:
        client.blob(ref, descriptor, path)

    return fetch
