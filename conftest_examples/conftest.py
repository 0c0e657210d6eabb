"""Shared fixtures of the example suite: copy what you need into your own conftest.py.

Run it with ``pytest -p northflank conftest_examples``: without ``NORTHFLANK_API_TOKEN`` it runs
on the embedded emulator; with a token (plus ``NORTHFLANK_PROJECT_ID``, and ``--nf-tag`` on a
spot-only cluster) the same tests run on real Northflank sandboxes.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_northflank import Sandbox

HERE = Path(__file__).parent

# These folders are uploaded into sandboxes, not collected here.
collect_ignore = ["greet_src", "sample_project"]

# The official Python image has python3 and pip; the embedded emulator runs the host's
# userland whatever the image, so the same tests pass on both backends.
PYTHON_IMAGE = "python:3.12-slim"


def build_wheel(package_dir: Path, version: str, out_dir: Path) -> Path:
    """Pack a pure-Python package into a wheel, with no build tools and no network.

    A wheel is a zip of the package plus METADATA, WHEEL and RECORD; pip installs it
    offline (``--no-index``), which is what a sandbox without internet access needs.
    """
    name = package_dir.name
    dist_info = f"{name}-{version}.dist-info"
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:

        def add(member: str, data: bytes) -> None:
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{member},sha256={digest.decode()},{len(data)}")

        for source in sorted(package_dir.rglob("*.py")):
            add(f"{name}/{source.relative_to(package_dir).as_posix()}", source.read_bytes())
        add(
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        )
        add(
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: conftest_examples\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        )
        records.append(f"{dist_info}/RECORD,,")
        archive.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return wheel


@pytest.fixture(scope="session")
def greet_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package ``greet`` as a wheel file on this machine."""
    return build_wheel(HERE / "greet_src" / "greet", "0.1.0", tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def python_box(nf_sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """One Python sandbox per test module, made with the factory (deleted after the module)."""
    box = nf_sandbox_factory(image=PYTHON_IMAGE, env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    box.run("python3 --version", check=True)
    return box


@pytest.fixture(scope="session")
def shared_box(nf_sandbox_session: Sandbox) -> Sandbox:
    """The session sandbox, prepared once: a tool every test can use.

    Paths are relative to the sandbox's working directory, which keeps them inside the
    sandbox on every backend.
    """
    nf_sandbox_session.write_text("tools/wordcount", '#!/bin/sh\nexec wc -w "$@"\n')
    nf_sandbox_session.run(["chmod", "+x", "tools/wordcount"], check=True)
    return nf_sandbox_session
