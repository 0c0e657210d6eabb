"""Running the official Northflank CLI and JS client (node) against the emulator.

The npm packages live in a cache folder inside the checkout, installed by ``.ci/run``:
``npm install --prefix .cache/npm-conformance @northflank/cli@0.9.24 @northflank/js-client``
(``NF_NPM_CONFORMANCE_DIR`` points elsewhere). Tests that need them skip, saying why, when
node or the packages are missing. The JS scripts get the token from the environment; only
``northflank login -t`` (the command under test) has it on its command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pytest_northflank.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
NPM_DIR_ENV = "NF_NPM_CONFORMANCE_DIR"
INSTALL_HINT = (
    "npm install --prefix .cache/npm-conformance @northflank/cli@0.9.24 @northflank/js-client "
    "(.ci/run does it)"
)
NODE_TIMEOUT = 120


def npm_dir() -> Path:
    return Path(os.environ.get(NPM_DIR_ENV) or ROOT / ".cache" / "npm-conformance")


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the official CLI and JS client need it")
    return node


def package_or_skip(name: str) -> Path:
    path = npm_dir() / "node_modules" / "@northflank" / name
    if not (path / "package.json").is_file():
        pytest.skip(f"@northflank/{name} is not installed in {npm_dir()}: {INSTALL_HINT}")
    return path


@dataclass
class Cli:
    """The official ``northflank`` CLI with a HOME of its own (its config lives there)."""

    node: str
    script: Path
    home: Path
    server: EmulatorServer

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NO_COLOR": "1",
            "FORCE_COLOR": "0",
        }
        done = subprocess.run(
            [self.node, str(self.script), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"northflank {' '.join(args)} exited {done.returncode}:\n"
                        f"{done.stdout}\n{done.stderr}")  # fmt: skip
        return done

    def json(self, *args: str) -> Any:
        done = self.run(*args, "-o", "json")
        try:
            return json.loads(done.stdout)
        except ValueError:
            pytest.fail(f"northflank {' '.join(args)} printed no JSON:\n{done.stdout}")

    def write_config(self, contexts: list[dict[str, Any]], current: str | None = None) -> None:
        """The CLI's config; ``lastUpdateCheck`` now, so it does not ask the npm registry."""
        folder = self.home / ".northflank"
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        config: dict[str, Any] = {"contexts": contexts, "lastUpdateCheck": now}
        if current is not None:
            config["current"] = current
        (folder / "config.json").write_text(json.dumps(config))

    def read_config(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.home / ".northflank" / "config.json").read_text())
        return result


def cli_for(server: EmulatorServer, home: Path) -> Cli:
    node = node_or_skip()
    package = package_or_skip("cli")
    cli = Cli(node, package / "dist" / "cli.js", home, server)
    cli.write_config([])
    return cli


def run_js(server: EmulatorServer, script: str, **env: str) -> Any:
    """Run ``script`` (CommonJS) with ``NF_JS_CLIENT``, ``NF_HOST`` and ``NF_TOKEN`` set; it
    prints one JSON value, returned here."""
    node = node_or_skip()
    package = package_or_skip("js-client")
    done = subprocess.run(
        [node, "-e", script],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NF_JS_CLIENT": str(package),
            "NF_HOST": server.url,
            "NF_TOKEN": server.token,
            **env,
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"node exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])
