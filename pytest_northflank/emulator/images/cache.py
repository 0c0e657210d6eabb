"""The image cache: blobs and unpacked layers by digest, image names pointing at them.

::

    <root>/                       $XDG_CACHE_HOME/pytest-northflank/images (0700)
      images/<sha256 of name>.json  name -> manifest digest, config digest, layer digests
      blobs/sha256/<hex>            image configs (layer blobs are deleted once unpacked)
      layers/<hex>/                 one unpacked layer, read-only lower dir of overlays
      locks/<hex>.lock              one per digest: a blob is fetched and unpacked once,
                                    whichever process (xdist worker, emulator) asks first
      in-use.lock                   held shared by every emulator using the cache; prune
                                    needs it exclusively, so it never pulls a layer out
                                    from under a running sandbox
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_northflank.emulator.images.unpack import layer_size, open_layer, unpack_layer
from pytest_northflank.errors import EmulatorError

Fetch = Callable[[Path], None]  # writes a verified blob to the given new file


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-northflank" / "images"


@dataclass(frozen=True)
class CachedImage:
    name: str
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]
    used: float  #: when a sandbox last started from it (epoch seconds)


class CacheBusy(EmulatorError):
    """Prune was asked while an emulator uses the cache."""


class ImageCache:
    """Content-addressed and safe for many processes at once (file locks per digest)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_cache_root()).absolute()
        if root is None:  # our own directory under the user's cache: private too
            self.root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        for sub in ("images", "blobs/sha256", "layers", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._in_use_fd: int | None = None

    # -- paths -----------------------------------------------------------------------------

    def layer_dir(self, digest: str) -> Path:
        return self.root / "layers" / _hex(digest)

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def _record_path(self, name: str) -> Path:
        return self.root / "images" / (hashlib.sha256(name.encode()).hexdigest() + ".json")

    @contextlib.contextmanager
    def _locked(self, digest: str) -> Iterator[None]:
        with FileLock(str(self.root / "locks" / f"{_hex(digest)}.lock"), mode=0o600):
            yield

    # -- filling ---------------------------------------------------------------------------

    def ensure_blob(self, digest: str, fetch: Fetch) -> Path:
        """The verified blob, fetched by ``fetch`` unless another process already did."""
        path = self.blob_path(digest)
        if path.exists():
            return path
        with self._locked(digest):
            if not path.exists():
                temporary = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
                try:
                    fetch(temporary)
                    os.chmod(temporary, 0o600)
                    os.replace(temporary, path)
                finally:
                    temporary.unlink(missing_ok=True)
        return path

    def ensure_layer(self, digest: str, fetch: Fetch) -> Path:
        """The unpacked layer directory; the blob is fetched and unpacked at most once."""
        target = self.layer_dir(digest)
        if target.is_dir():
            return target
        with self._locked(digest):
            if target.is_dir():
                return target
            blob = self.blob_path(digest)
            if not blob.exists():
                temporary_blob = blob.with_name(f".tmp-{blob.name}-{secrets.token_hex(4)}")
                try:
                    fetch(temporary_blob)
                    os.replace(temporary_blob, blob)
                finally:
                    temporary_blob.unlink(missing_ok=True)
            staging = target.with_name(f".tmp-{target.name}-{secrets.token_hex(4)}")
            try:
                with open_layer(blob) as stream:
                    unpack_layer(stream, staging)
                os.rename(staging, target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            blob.unlink(missing_ok=True)  # the unpacked directory is all we need from now on
        return target

    def record(
        self, name: str, manifest_digest: str, config_digest: str, layers: list[str]
    ) -> CachedImage:
        image = CachedImage(name, manifest_digest, config_digest, tuple(layers), time.time())
        _write_json(self._record_path(name), _image_json(image))
        return image

    # -- reading ---------------------------------------------------------------------------

    def lookup(self, name: str) -> CachedImage | None:
        """The cached image called ``name`` if it and all its layers are present."""
        image = _read_image(self._record_path(name))
        if image is None or image.name != name:
            return None
        if not self.blob_path(image.config_digest).exists():
            return None
        if not all(self.layer_dir(d).is_dir() for d in image.layer_digests):
            return None
        return image

    def config(self, image: CachedImage) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.blob_path(image.config_digest).read_bytes())
        return data

    def touch(self, image: CachedImage) -> None:
        """Note that a sandbox used ``image`` now (prune drops the least recently used)."""
        with contextlib.suppress(OSError):
            _write_json(self._record_path(image.name), {**_image_json(image), "used": time.time()})

    def images(self) -> list[CachedImage]:
        found = (_read_image(p) for p in sorted((self.root / "images").glob("*.json")))
        return sorted((i for i in found if i is not None), key=lambda i: i.name)

    def layer_bytes(self, digest: str) -> int:
        meta = self.layer_dir(digest).with_name(f"{_hex(digest)}.size")
        with contextlib.suppress(OSError, ValueError):
            return int(meta.read_text())
        size = layer_size(self.layer_dir(digest))
        with contextlib.suppress(OSError):
            meta.write_text(str(size))
            os.chmod(meta, 0o600)
        return size

    def image_bytes(self, image: CachedImage) -> int:
        return sum(self.layer_bytes(d) for d in image.layer_digests)

    # -- in use and prune ------------------------------------------------------------------

    def hold(self) -> None:
        """Mark the cache as used by this process until :meth:`release` (or exit)."""
        if self._in_use_fd is None:
            fd = os.open(self.root / "in-use.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._in_use_fd = fd

    def release(self) -> None:
        if self._in_use_fd is not None:
            os.close(self._in_use_fd)
            self._in_use_fd = None

    def prune(self, max_bytes: int = 0) -> tuple[list[str], int]:
        """Forget least recently used images until the cache holds at most ``max_bytes``,
        then delete every layer and blob no image needs. Returns (removed names, bytes freed).
        Raises :class:`CacheBusy` while an emulator holds the cache."""
        fd = os.open(self.root / "in-use.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CacheBusy(
                    f"the image cache {self.root} is in use by a running emulator; "
                    "stop it and prune again"
                ) from None
            return self._prune(max_bytes)
        finally:
            os.close(fd)

    def _prune(self, max_bytes: int) -> tuple[list[str], int]:
        images = sorted(self.images(), key=lambda i: i.used)
        sizes = {d: self.layer_bytes(d) for i in images for d in i.layer_digests}
        removed: list[str] = []

        def total(kept: list[CachedImage]) -> int:
            return sum(sizes[d] for d in {d for i in kept for d in i.layer_digests})

        while images and total(images) > max_bytes:
            oldest = images.pop(0)
            self._record_path(oldest.name).unlink(missing_ok=True)
            removed.append(oldest.name)
        wanted_layers = {_hex(d) for i in images for d in i.layer_digests}
        wanted_blobs = {_hex(i.config_digest) for i in images}
        freed = 0
        for entry in (self.root / "layers").iterdir():
            stem = entry.name.removesuffix(".size")
            if stem not in wanted_layers:
                if entry.is_dir():
                    freed += sizes.get(f"sha256:{stem}", 0)
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        for blob in (self.root / "blobs" / "sha256").iterdir():
            if blob.name not in wanted_blobs:
                freed += blob.stat().st_size
                blob.unlink(missing_ok=True)
        return removed, freed


def peek(name: str, root: Path | None = None) -> CachedImage | None:
    """The cached image called ``name`` without creating anything (for the pytest header);
    its layers are not checked."""
    root = (root or default_cache_root()).absolute()
    image = _read_image(root / "images" / (hashlib.sha256(name.encode()).hexdigest() + ".json"))
    return image if image is not None and image.name == name else None


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise EmulatorError(f"not a sha256 digest: {digest!r}")
    return value


def _image_json(image: CachedImage) -> dict[str, Any]:
    return {
        "name": image.name,
        "manifest": image.manifest_digest,
        "config": image.config_digest,
        "layers": list(image.layer_digests),
        "used": image.used,
    }


def _read_image(path: Path) -> CachedImage | None:
    try:
        data = json.loads(path.read_text())
        return CachedImage(
            str(data["name"]),
            str(data["manifest"]),
            str(data["config"]),
            tuple(str(d) for d in data["layers"]),
            float(data.get("used", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)
