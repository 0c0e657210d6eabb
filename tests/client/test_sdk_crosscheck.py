"""Cross-check with the official Python SDK (northflank 2.1.0) on the same emulator: what our
client uploads the SDK downloads intact, and the other way round, for files and directories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from client_helpers import PROJECT, unique_name

from pytest_northflank.client import NorthflankClient, Service

northflank = pytest.importorskip("northflank")

# The SDK opens session WebSockets without a context manager, which websockets >= 17.1 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)


@pytest.fixture(scope="module")
def sdk(emulator: Any) -> Any:
    return northflank.ApiClient(api_token=emulator.token, base_url=emulator.url)


def make_tree(root: Path) -> None:
    # Modes without group/other write: the SDK's extraction filter ("data") clears those bits.
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("A = 1\n")
    (root / "pkg" / "sub" / "blob.bin").write_bytes(os.urandom(300_000))
    (root / "tool.sh").write_text("#!/bin/sh\n")
    (root / "tool.sh").chmod(0o755)
    (root / "private").write_text("p")
    (root / "private").chmod(0o600)
    (root / "link").symlink_to("pkg/__init__.py")


def files_of(root: Path) -> dict[str, tuple[int, bytes | str]]:
    found: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = (0, os.readlink(path))
            else:
                found[rel] = (path.stat().st_mode & 0o777, path.read_bytes())
    return found


def test_our_file_upload_downloads_intact_with_the_sdk(
    nf: NorthflankClient, sdk: Any, service: Service, tmp_path: Path
) -> None:
    source = tmp_path / "ours.bin"
    source.write_bytes(os.urandom(2_500_000))
    remote = unique_name("x") + "/ours.bin"
    nf.upload(PROJECT, service.id, source, remote)
    sdk.files.download(
        project_id=PROJECT,
        service_id=service.id,
        remote_path=remote,
        local_path=tmp_path / "sdk.bin",
    )
    assert (tmp_path / "sdk.bin").read_bytes() == source.read_bytes()


def test_sdk_file_upload_downloads_intact_with_ours(
    nf: NorthflankClient, sdk: Any, service: Service, tmp_path: Path
) -> None:
    source = tmp_path / "theirs.bin"
    source.write_bytes(os.urandom(2_500_000))
    remote = unique_name("y") + "/theirs.bin"
    sdk.files.upload(
        project_id=PROJECT, service_id=service.id, local_path=source, remote_path=remote
    )
    nf.download(PROJECT, service.id, remote, tmp_path / "ours.bin")
    assert (tmp_path / "ours.bin").read_bytes() == source.read_bytes()


def test_our_directory_upload_downloads_intact_with_the_sdk(
    nf: NorthflankClient, sdk: Any, service: Service, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    remote = unique_name("d")
    nf.upload(PROJECT, service.id, tree, remote)
    out = tmp_path / "sdk-out"
    sdk.files.download(
        project_id=PROJECT, service_id=service.id, remote_path=remote, local_path=out
    )
    assert files_of(out) == files_of(tree)


def test_sdk_directory_upload_downloads_intact_with_ours(
    nf: NorthflankClient, sdk: Any, service: Service, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    remote = unique_name("e")
    sdk.files.upload(project_id=PROJECT, service_id=service.id, local_path=tree, remote_path=remote)
    out = tmp_path / "ours-out"
    nf.download(PROJECT, service.id, remote, out)
    assert files_of(out) == files_of(tree)
    assert (out / "pkg" / "sub").is_dir()


def test_exec_results_agree(nf: NorthflankClient, sdk: Any, service: Service) -> None:
    command = "printf 'out'; printf 'err' >&2; exit 4"
    ours = nf.run(PROJECT, service.id, command)
    theirs = sdk.exec.run_service_command(
        project_id=PROJECT, service_id=service.id, command=["sh", "-c", command]
    )
    assert (ours.exit_code, ours.stdout_text, ours.stderr_text) == (
        theirs.exit_code,
        theirs.stdout,
        theirs.stderr,
    )
