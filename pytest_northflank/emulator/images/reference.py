"""Image references as Docker reads them: ``[host[:port]/]path[:tag][@digest]``.

A first component with a dot, a colon or named ``localhost`` is a registry host; otherwise the
image is on Docker Hub, whose one-word names live under ``library/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference; :attr:`name` is the canonical form used as the cache key."""

    registry: str  #: host[:port] as written (``docker.io`` for Docker Hub)
    repository: str  #: ``library/ubuntu``
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def reference(self) -> str:
        """What to ask the manifest endpoint for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def host(self) -> str:
        """The host without its port."""
        return self.registry.rsplit(":", 1)[0] if ":" in self.registry else self.registry

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB


def parse_reference(image: str) -> ImageRef:
    """Parse ``image``; raises ``ValueError`` for something that is not a reference."""
    rest = image.strip()
    if not rest or any(ch.isspace() for ch in rest):
        raise ValueError(f"{image!r} is not an image reference")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise ValueError(f"{image!r} has a malformed digest (expected sha256:<64 hex>)")
    tag = None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, rest
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or repository != repository.lower():
        raise ValueError(f"{image!r} is not an image reference (lower-case path expected)")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, repository, tag, digest)
