"""Tags made on first use on the embedded emulator, so that a suite configured for a real
cluster (``nf_tags = spot-workload``) also runs offline."""

from __future__ import annotations

import threading

from pytest_northflank.client import NorthflankClient


class MissingTags:
    """Creates the tags a spec names that the API does not have yet (once each)."""

    def __init__(self, client: NorthflankClient) -> None:
        self.client = client
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, names: list[str]) -> None:
        with self._lock:
            missing = set(names) - self._known
            if not missing:
                return
            self._known.update(tag.name for tag in self.client.list_tags())
            for name in sorted(missing - self._known):
                self.client.create_tag(name)
                self._known.add(name)
