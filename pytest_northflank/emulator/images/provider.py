"""The emulator's image policy: which image a sandbox gets, or why it gets the host's userland.

* The image is in the cache, or a registry hands it over: the sandbox runs it.
* The registry answers "no such image/tag", refuses the credentials or sends something
  unusable: the deployment fails, as on Northflank (the caller turns the error into the
  service's FAILED status).
* No registry can be reached and the image is not cached: the sandbox runs this machine's
  userland, and the fallback is recorded so that pytest can say so (or, with
  ``require_images``, the deployment fails instead).
* Directory isolation cannot stack layers: every sandbox uses the host's files, recorded the
  same way.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from pytest_northflank.emulator.images.errors import RegistryUnreachable
from pytest_northflank.emulator.images.reference import parse_reference
from pytest_northflank.emulator.images.store import Image, ImageStore

DIRECTORY_REASON = "directory isolation cannot run images"
OFFLINE_MEMORY_SECONDS = 60.0


@dataclass(frozen=True)
class HostFallback:
    image: str  #: as the service asked for it
    reason: str  #: short: why the image was not used

    @property
    def notice(self) -> str:
        return (
            f"image {self.image} not available offline: using this machine's userland "
            f"({self.reason})"
        )


class ImageProvider:
    """Thread-safe; ``store`` None means images are off (every sandbox: host userland)."""

    def __init__(
        self,
        store: ImageStore | None,
        *,
        require_images: bool = False,
        directory_mode: bool = False,
    ) -> None:
        self.store = store
        self.require_images = require_images
        self.directory_mode = directory_mode
        self._lock = threading.Lock()
        self._fallbacks: dict[str, HostFallback] = {}
        self._offline: dict[str, tuple[float, str]] = {}  # registry -> (when, answer)

    def get(self, image: str, credential_id: str | None = None) -> Image | HostFallback:
        """The image, or a recorded :class:`HostFallback`. Raises :class:`ImageError` when
        the deployment must fail (including a fallback that ``require_images`` forbids)."""
        if self.store is None or self.directory_mode:
            reason = DIRECTORY_REASON if self.directory_mode else "images are turned off"
            if self.require_images:
                raise RegistryUnreachable(image, reason, "use namespace isolation (root on Linux)")
            return self._record(HostFallback(image, reason))
        offline = self._offline_answer(image)
        try:
            if offline is not None:
                cached = self.store.cached(image)
                if cached is not None:
                    return cached
                raise RegistryUnreachable(image, offline)
            return self.store.get(image, credential_id)
        except RegistryUnreachable as exc:
            self._note_offline(image, exc.answer)
            if self.require_images:
                raise
            return self._record(HostFallback(image, exc.answer))

    def _offline_answer(self, image: str) -> str | None:
        """What the image's registry said when it last could not be reached, if recently:
        each sandbox of an offline run must not wait for the network to fail again."""
        with self._lock:
            seen = self._offline.get(_registry_of(image))
        if seen is None or time.monotonic() - seen[0] > OFFLINE_MEMORY_SECONDS:
            return None
        return seen[1]

    def _note_offline(self, image: str, answer: str) -> None:
        with self._lock:
            self._offline[_registry_of(image)] = (time.monotonic(), answer)

    def _record(self, fallback: HostFallback) -> HostFallback:
        with self._lock:
            self._fallbacks.setdefault(fallback.image, fallback)
        return fallback

    def fallbacks(self) -> list[HostFallback]:
        """Every image that fell back to the host's userland so far (one entry per image)."""
        with self._lock:
            return list(self._fallbacks.values())


def _registry_of(image: str) -> str:
    try:
        return parse_reference(image).registry
    except ValueError:
        return image
