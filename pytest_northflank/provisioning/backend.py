"""The API a run's sandboxes live behind: Northflank itself, or the embedded emulator.

A :class:`Backend` belongs to one pytest process. It opens API clients for the settings in use,
starts the embedded emulator on first use (on a thread of this process without xdist; under
xdist one emulator process shared by the workers, see :mod:`.shared_emulator`), and at the end
records the clients' request figures and stops what it started.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pytest_northflank.client import NorthflankClient
from pytest_northflank.config.settings import Settings
from pytest_northflank.errors import ConfigError, EmulatorError
from pytest_northflank.provisioning import shared_emulator
from pytest_northflank.run.identity import Run

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer


class Backend:
    """Opens clients for the chosen backend and owns the embedded emulator it started."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.clients: list[NorthflankClient] = []
        # The embedded emulator on a thread of this process (without xdist).
        self.emulator: EmulatorServer | None = None
        # URL and token of whichever embedded emulator this process uses.
        self._emulator_endpoint: tuple[str, str] | None = None
        # The CA its forwarding tunnel's certificate is signed by.
        self._emulator_ca_file: str | None = None
        # Image -> notice, for images the emulator ran on this machine's userland; and the
        # images already asked about.
        self._image_notices: dict[str, str] = {}
        self._images_asked: set[str] = set()

    def image_notice(self, image: str) -> str | None:
        """The emulator's notice when it ran ``image`` on this machine's userland, else None.

        Asked once per image, after a sandbox of it started: the emulator decides at the first
        start and keeps to it (a fallback is remembered, a pulled image stays cached).
        """
        if self._emulator_endpoint is None:
            return None
        if image not in self._images_asked:
            from pytest_northflank.emulator.control_client import EmulatorControl

            self._images_asked.add(image)
            try:
                info = EmulatorControl(*self._emulator_endpoint, timeout=10.0).info()
            except EmulatorError:
                return None
            for entry in info.get("imageFallbacks") or []:
                self._image_notices[str(entry["image"])] = str(entry["notice"])
        return self._image_notices.get(image)

    def emulator_endpoint(self, settings: Settings) -> tuple[str, str]:
        """URL and token of the embedded emulator, started on first use.

        Without xdist it runs on a thread of this process and stops at session end. Under xdist
        all workers share one emulator process, so a run-wide sandbox and the controller's
        crash cleanup see the same API.
        """
        if self._emulator_endpoint is not None:
            return self._emulator_endpoint
        run = self.run
        shared = shared_emulator.find(run.run_dir) if run.is_controller else None
        if run.is_controller and shared is None:
            # Late: a run on Northflank never loads the emulator (starlette, uvicorn).
            from pytest_northflank.emulator import EmulatorServer
            from pytest_northflank.emulator.images.options import ImageOptions

            server = EmulatorServer(
                isolation=settings.emulator_isolation,
                ready_delay=settings.emulator_ready_delay,
                project_ids=(settings.project_in_use,),
                images=None
                if settings.emulator_images is None  # the emulator's default (its variable)
                else ImageOptions(
                    enabled=settings.emulator_images != "off",
                    require=settings.emulator_images == "require",
                ),
            )
            server.start()
            self.emulator = server
            url, token = server.url, server.token
            isolation, reason = str(server.isolation), server.isolation_reason
            self._emulator_ca_file = str(server.ca_file)
        else:
            if shared is None:
                shared = shared_emulator.find_or_start(
                    run.run_dir,
                    exit_with_pid=os.getppid(),  # the xdist controller
                    isolation=settings.emulator_isolation,
                    ready_delay=settings.emulator_ready_delay,
                    project_id=settings.project_in_use,
                    images=settings.emulator_images,
                )
            url, token = shared.url, shared.token
            isolation, reason = shared.isolation, shared.isolation_reason
            self._emulator_ca_file = shared.ca_file
        self._emulator_endpoint = (url, token)
        run.stats.note_emulator(url, isolation, reason)
        return self._emulator_endpoint

    def open_client(self, settings: Settings) -> NorthflankClient:
        """A client for the backend the settings chose (starting the embedded emulator if
        needed); :meth:`finish` counts its requests."""
        if settings.backend_in_use == "emulator":
            url, token = self.emulator_endpoint(settings)
            client = NorthflankClient(
                token, base_url=url, team_id=settings.team, ca_file=self._emulator_ca_file
            )
        else:
            settings.check_usable()  # a conftest may have overridden nf_settings
            if settings.token is None:
                raise ConfigError("the northflank backend needs NORTHFLANK_API_TOKEN")
            client = NorthflankClient(
                settings.token.get_secret_value(), base_url=settings.api_url, team_id=settings.team
            )
        self.clients.append(client)
        return client

    def close_client(self, client: NorthflankClient) -> None:
        """Close a client opened for one job (a sweep)."""
        client.close()
        if client in self.clients:
            self.clients.remove(client)

    def finish(self) -> None:
        """Record the API figures of this process's clients and stop the embedded emulator."""
        try:
            for client in self.clients:
                self.run.stats.record_client(client)
            self.clients.clear()
        finally:
            if self.emulator is not None:
                emulator, self.emulator = self.emulator, None
                emulator.stop()
