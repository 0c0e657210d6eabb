"""A registry v2 client: manifests (resolved to this machine's platform) and verified blobs.

Auth follows Docker: anonymous first; a 401 with ``WWW-Authenticate: Bearer realm=...`` is
answered by fetching a pull token from the realm (with basic credentials when we have some),
a ``Basic`` challenge by sending the credentials. Plain HTTP only for ``localhost``,
``127.0.0.1``, ``::1`` and the registries named as insecure (Docker's rule). Transient
failures (connection errors, 429, 5xx) are retried; every blob is checked against its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pytest_northflank.emulator.images.credentials import Auth
from pytest_northflank.emulator.images.errors import (
    BadImage,
    ImageNotFound,
    RegistryAuthError,
    RegistryUnreachable,
)
from pytest_northflank.emulator.images.reference import DOCKER_HUB_API, ImageRef

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
MAX_MANIFEST_BYTES = 4 << 20
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i686": "386",
           "i386": "386", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64"}  # fmt: skip
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


def this_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) in OCI's words for the machine we run on."""
    machine = os.uname().machine
    return "linux", _ARCHES.get(machine, machine), "v7" if machine == "armv7l" else None


def pick_platform(name: str, index: dict[str, Any], platform: tuple[str, str, str | None]) -> str:
    """The digest of the index entry for ``platform``; :class:`BadImage` when there is none."""
    want_os, want_arch, want_variant = platform
    offered = []
    for entry in index.get("manifests") or []:
        found = entry.get("platform") or {}
        pair = (found.get("os"), found.get("architecture"))
        offered.append("/".join(str(p) for p in pair))
        if pair != (want_os, want_arch):
            continue
        if want_variant and found.get("variant") not in (None, want_variant):
            continue
        return str(entry["digest"])
    raise BadImage(
        name,
        f"no manifest for {want_os}/{want_arch} (the index offers {', '.join(offered)})",
        "build or pull an image for this machine's platform",
    )


@dataclass(frozen=True)
class Manifest:
    digest: str  #: of the image manifest itself (after resolving an index)
    config: dict[str, Any]  #: the config descriptor
    layers: list[dict[str, Any]]  #: layer descriptors, bottom first


class RegistryClient:
    """Pulls from v2 registries; ``credentials(host)`` gives basic credentials or None."""

    def __init__(
        self,
        *,
        credentials: Callable[[str], Auth | None] = lambda _host: None,
        insecure: frozenset[str] = frozenset(),
        mirror: str | None = None,
        platform: tuple[str, str, str | None] | None = None,
        timeout: float = 30.0,
        attempts: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self._credentials = credentials
        self._insecure = insecure
        self._mirror = mirror.rstrip("/") if mirror else None
        self.platform = platform or this_platform()
        self._attempts = attempts
        self._backoff = backoff
        self._tokens: dict[tuple[str, str], str] = {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=True,  # httpx drops Authorization when the origin changes
            headers={"User-Agent": "pytest-northflank-emulator"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- public ----------------------------------------------------------------------------

    def manifest(self, ref: ImageRef) -> Manifest:
        """The image manifest for ``ref``, an index resolved to this machine's platform."""
        data, media_type, digest = self._get_manifest(ref, ref.reference)
        document = _json(ref, data, "manifest")
        media_type = document.get("mediaType") or media_type
        if media_type in INDEXES or "manifests" in document:
            chosen = pick_platform(ref.name, document, self.platform)
            data, media_type, digest = self._get_manifest(ref, chosen)
            document = _json(ref, data, "manifest")
            media_type = document.get("mediaType") or media_type
        if media_type not in MANIFESTS or not isinstance(document.get("layers"), list):
            raise BadImage(ref.name, f"unsupported manifest type {media_type!r}",
                           "Docker schema 2 and OCI manifests are supported")  # fmt: skip
        return Manifest(digest, document["config"], document["layers"])

    def blob(self, ref: ImageRef, descriptor: dict[str, Any], destination: Path) -> None:
        """Download a blob to ``destination`` (a new file), verified against its digest."""
        digest = str(descriptor["digest"])
        size = descriptor.get("size")
        for attempt in range(self._attempts):
            try:
                self._download(ref, digest, size, destination)
                return
            except _Transient as exc:
                if attempt + 1 == self._attempts:
                    raise RegistryUnreachable(ref.name, f"blob {digest[:19]}: {exc}") from None
                time.sleep(self._backoff * 2**attempt)

    # -- manifests -------------------------------------------------------------------------

    def _get_manifest(self, ref: ImageRef, reference: str) -> tuple[bytes, str, str]:
        accept = ", ".join((*MANIFESTS, *INDEXES))
        response = self._request(ref, "GET", f"manifests/{reference}", {"Accept": accept})
        try:
            data = response.read()
        finally:
            response.close()
        if len(data) > MAX_MANIFEST_BYTES:
            raise BadImage(ref.name, f"manifest of {len(data)} bytes is too large")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise BadImage(ref.name, f"manifest digest mismatch: asked {reference}, got {digest}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return data, media_type, digest

    # -- blobs -----------------------------------------------------------------------------

    def _download(self, ref: ImageRef, digest: str, size: Any, destination: Path) -> None:
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256":
            raise BadImage(ref.name, f"unsupported digest algorithm in {digest!r}")
        response = self._request(ref, "GET", f"blobs/{digest}", {})
        hasher = hashlib.sha256()
        written = 0
        try:
            with contextlib.closing(response), open(destination, "wb") as out:
                for chunk in _chunks(response):
                    hasher.update(chunk)
                    written += len(chunk)
                    if isinstance(size, int) and written > size:
                        break
                    out.write(chunk)
        except BaseException:
            destination.unlink(missing_ok=True)
            raise
        if hasher.hexdigest() != expected or (isinstance(size, int) and written != size):
            destination.unlink(missing_ok=True)
            raise BadImage(ref.name, f"blob {digest} failed verification (digest or size "
                           "mismatch)", "the registry sent damaged data")  # fmt: skip

    # -- transport and auth ----------------------------------------------------------------

    def _base(self, ref: ImageRef) -> str:
        if ref.is_docker_hub:
            if self._mirror:
                return self._mirror
            return f"https://{DOCKER_HUB_API}"
        plain = (
            ref.host in LOCAL_HOSTS
            or ref.registry in self._insecure
            or ref.host in (self._insecure)
        )
        return f"{'http' if plain else 'https'}://{ref.registry}"

    def _request(
        self, ref: ImageRef, method: str, path: str, headers: dict[str, str]
    ) -> httpx.Response:
        """Send with retries and auth; returns an open (streamed) 2xx response."""
        url = f"{self._base(ref)}/v2/{ref.repository}/{path}"
        key = (ref.registry, ref.repository)
        authorised = False
        attempt = 0
        while True:
            sent = dict(headers)
            if key in self._tokens:
                sent["Authorization"] = self._tokens[key]
            try:
                response = self._http.send(
                    self._http.build_request(method, url, headers=sent), stream=True
                )
            except (httpx.TransportError, OSError) as exc:
                attempt += 1
                # No retry when the connection never opened (no DNS answer, refused, timed
                # out): offline CI must fall back at once, not after a minute of retries.
                if attempt >= self._attempts or isinstance(exc, _NOT_CONNECTED):
                    raise RegistryUnreachable(
                        ref.name, f"cannot reach {self._base(ref)}: {_describe(exc)}",
                        "check the network, or load the image with "
                        "'pytest-northflank images load'",
                    ) from None  # fmt: skip
                time.sleep(self._backoff * 2 ** (attempt - 1))
                continue
            if response.status_code == 401 and not authorised:
                challenge = response.headers.get("www-authenticate", "")
                response.close()
                self._tokens[key] = self._authorise(ref, challenge)
                authorised = True
                continue
            if response.status_code < 300:
                return response
            body = response.read()
            response.close()
            status = response.status_code
            if (status == 429 or status >= 500) and attempt + 1 < self._attempts:
                attempt += 1
                time.sleep(self._backoff * 2 ** (attempt - 1))
                continue
            raise _status_error(ref, status, body, authorised, self._credentials(ref.registry))

    def _authorise(self, ref: ImageRef, challenge: str) -> str:
        scheme, _, params_text = challenge.partition(" ")
        auth = self._credentials(ref.registry)
        if scheme.lower() == "basic":
            if auth is None:
                raise RegistryAuthError(ref.name, "the registry wants credentials",
                                        _CREDENTIALS_HINT)  # fmt: skip
            return _basic(auth)
        if scheme.lower() != "bearer":
            raise RegistryAuthError(ref.name, f"unsupported auth challenge {challenge!r}")
        params = dict(_CHALLENGE_RE.findall(params_text))
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(ref.name, "the registry's Bearer challenge has no realm")
        query = {"scope": f"repository:{ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        try:
            response = self._http.get(
                realm, params=query, auth=httpx.BasicAuth(*auth) if auth else None
            )
        except (httpx.TransportError, OSError) as exc:
            raise RegistryUnreachable(ref.name, f"cannot reach the token service {realm}: "
                                      f"{_describe(exc)}") from None  # fmt: skip
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                ref.name,
                f"the token service refused the credentials (HTTP {response.status_code})",
                _CREDENTIALS_HINT,
            )
        if response.status_code >= 300:
            raise RegistryAuthError(ref.name, f"the token service answered HTTP "
                                    f"{response.status_code}")  # fmt: skip
        try:
            payload = response.json()
            token = payload.get("token") or payload.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(ref.name, "the token service sent no token")
        return f"Bearer {token}"


_CREDENTIALS_HINT = (
    "give credentials in deployment.external.credentials (the emulator's "
    "--registry-credentials file) or in Docker's config.json"
)


_NOT_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, OSError)


class _Transient(Exception):
    pass


def _chunks(response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes(1 << 20)
    except (httpx.TransportError, OSError) as exc:
        raise _Transient(_describe(exc)) from None


def _basic(auth: Auth) -> str:
    return httpx.BasicAuth(*auth)._auth_header


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _json(ref: ImageRef, data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        raise BadImage(ref.name, f"the registry sent a {what} that is not JSON") from None
    if not isinstance(document, dict):
        raise BadImage(ref.name, f"the registry sent a {what} that is not a JSON object")
    return document


def _status_error(
    ref: ImageRef, status: int, body: bytes, authorised: bool, auth: Auth | None
) -> Exception:
    answer = _registry_message(body) or f"HTTP {status}"
    if status == 404:
        return ImageNotFound(ref.name, f"the registry answered: {answer}",
                             "check the image name and tag")  # fmt: skip
    if status in (401, 403):
        what = "refused the credentials" if auth else "denied anonymous access"
        return RegistryAuthError(
            ref.name,
            f"the registry {what}: {answer}",
            "the repository may not exist, or needs credentials: " + _CREDENTIALS_HINT,
        )
    if status == 429 or status >= 500:
        return RegistryUnreachable(ref.name, f"the registry keeps failing: {answer}")
    return BadImage(ref.name, f"the registry answered HTTP {status}: {answer}")


def _registry_message(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')} {first.get('message', '')}".strip()[:200]
    except (ValueError, AttributeError, IndexError, TypeError):
        return body[:200].decode("utf-8", "replace").strip()
