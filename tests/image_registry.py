"""A registry v2 server for tests, on 127.0.0.1 in a thread: manifests and blobs from
memory, Docker Hub's token flow (``WWW-Authenticate: Bearer realm=...``) with optional user
credentials, request counters and injected faults."""

from __future__ import annotations

import base64
import collections
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from image_builder import OCI_INDEX, OCI_MANIFEST, Image, digest_of, index_bytes


class TestRegistry:
    __test__ = False

    def __init__(
        self, *, users: dict[str, str] | None = None, host: str = "127.0.0.1",
        blob_delay: float = 0.0,
    ) -> None:  # fmt: skip
        self.users = users  # None: anonymous tokens; else basic credentials required
        self.blob_delay = blob_delay
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.fail_next: collections.Counter[str] = collections.Counter()  # path part -> 503s
        self.corrupt: set[str] = set()
        self._tokens: dict[str, str] = {}  # token -> repository
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                registry._handle(self)

            do_HEAD = do_GET

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up on a kept-alive connection is no news

        self._server = Server((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.address = f"{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- content ---------------------------------------------------------------------------

    def push(self, repository: str, tag: str, image: Image) -> str:
        """Serve ``image`` as ``repository:tag``; returns its manifest digest."""
        self.blobs.update(image.blobs())
        manifest = image.manifest_bytes()
        media = json.loads(manifest)["mediaType"]
        return self._put_manifest(repository, tag, media, manifest)

    def push_index(self, repository: str, tag: str, images: list[tuple[Image, str, str]]) -> str:
        entries = []
        for image, os_name, arch in images:
            self.blobs.update(image.blobs())
            manifest = image.manifest_bytes()
            self._put_manifest(repository, digest_of(manifest), OCI_MANIFEST, manifest)
            entries.append((manifest, os_name, arch))
        return self._put_manifest(repository, tag, OCI_INDEX, index_bytes(entries))

    def _put_manifest(self, repository: str, reference: str, media: str, data: bytes) -> str:
        digest = digest_of(data)
        self.manifests[(repository, reference)] = (media, data)
        self.manifests[(repository, digest)] = (media, data)
        return digest

    def blob_hits(self, image: Image) -> list[int]:
        return [self.hits[f"blobs:{d}"] for d in image.blobs()]

    # -- serving ---------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path.startswith("/token"):
            return self._token(request)
        if path == "/v2/":
            return self._reply(request, 200, b"{}")
        parts = path.removeprefix("/v2/").split("/")
        if len(parts) < 3 or parts[-2] not in ("manifests", "blobs"):
            return self._error(request, 404, "NAME_UNKNOWN", "repository name not known")
        repository, kind, reference = "/".join(parts[:-2]), parts[-2], parts[-1]
        if not self._authorised(request, repository):
            realm = f"http://{self.address}/token"
            challenge = (f'Bearer realm="{realm}",service="test-registry",'
                         f'scope="repository:{repository}:pull"')  # fmt: skip
            return self._error(request, 401, "UNAUTHORIZED", "authentication required",
                               {"WWW-Authenticate": challenge})  # fmt: skip
        with self._lock:
            key = f"{kind}:{reference}"
            self.hits[key] += 1
            failing = self.fail_next[kind] > 0
            if failing:
                self.fail_next[kind] -= 1
        if failing:
            return self._error(request, 503, "UNAVAILABLE", "try again")
        if kind == "manifests":
            found = self.manifests.get((repository, reference))
            if found is None:
                return self._error(request, 404, "MANIFEST_UNKNOWN",
                                   f"manifest unknown: {repository}:{reference}")  # fmt: skip
            media, data = found
            return self._reply(request, 200, data, {"Content-Type": media,
                               "Docker-Content-Digest": digest_of(data)})  # fmt: skip
        blob = self.blobs.get(reference)
        if blob is None:
            return self._error(request, 404, "BLOB_UNKNOWN", "blob unknown to registry")
        if self.blob_delay:
            time.sleep(self.blob_delay)  # makes parallel pulls overlap
        if reference in self.corrupt:
            blob = blob[:-1] + bytes([blob[-1] ^ 1])
        return self._reply(request, 200, blob, {"Content-Type": "application/octet-stream"})

    def _authorised(self, request: BaseHTTPRequestHandler, repository: str) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        return self._tokens.get(header.removeprefix("Bearer ")) == repository

    def _token(self, request: BaseHTTPRequestHandler) -> None:
        query = dict(
            item.split("=", 1) for item in request.path.partition("?")[2].split("&") if "=" in item
        )
        if self.users is not None:
            header = request.headers.get("Authorization", "")
            try:
                user, _, password = (
                    base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
                )
            except ValueError:
                user, password = "", ""
            if not header.startswith("Basic ") or self.users.get(user) != password:
                return self._error(request, 401, "UNAUTHORIZED", "incorrect username or password")
        scope = query.get("scope", "").replace("%3A", ":").replace("%2F", "/")
        repository = scope.split(":")[1] if scope.count(":") == 2 else ""
        token = secrets.token_hex(8)
        self._tokens[token] = repository
        self._reply(request, 200, json.dumps({"token": token}).encode())
        return None

    @staticmethod
    def _error(
        request: BaseHTTPRequestHandler, status: int, code: str, message: str,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        TestRegistry._reply(request, status, body, headers)

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler, status: int, body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        request.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)
