"""Why an image could not be had; all are :class:`~pytest_northflank.errors.EmulatorError`.

::

    ImageError
    ├── ImageNotFound        the registry says the repository, tag or digest does not exist
    ├── RegistryAuthError    the registry refused the credentials (or asked for some)
    ├── RegistryUnreachable  no answer from the registry (DNS, refused, timeout, TLS)
    └── BadImage             the registry answered, but with something we cannot run
                             (digest mismatch, unknown media type, no manifest for this machine)
"""

from __future__ import annotations

from pytest_northflank.errors import EmulatorError


class ImageError(EmulatorError):
    """An image could not be pulled, loaded or unpacked."""

    def __init__(self, image: str, answer: str, hint: str = "") -> None:
        self.image = image
        self.answer = answer  #: what the registry (or the archive) said, short
        self.hint = hint
        text = f"image {image!r}: {answer}"
        super().__init__(f"{text} ({hint})" if hint else text)


class ImageNotFound(ImageError):
    """The registry answered that the repository, tag or digest does not exist."""


class RegistryAuthError(ImageError):
    """The registry refused the credentials, or wants some and none were given."""


class RegistryUnreachable(ImageError):
    """The registry could not be reached at all."""


class BadImage(ImageError):
    """The image exists but cannot be used here."""
