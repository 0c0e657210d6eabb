"""``pytest-northflank images list|prune|load``, run as the installed command would be."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from image_builder import Layer, docker_save, make_image, oci_layout


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_northflank.cli", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_load_list_prune(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    image = make_image(Layer().file("f", b"x" * 10_000))
    tarball = docker_save(image, "team/tool:1", tmp_path / "tool.tar")
    loaded = cli("images", "--cache", cache, "load", str(tarball))
    assert (loaded.returncode, loaded.stdout) == (0, "loaded docker.io/team/tool:1\n")
    layout = oci_layout(make_image(Layer().file("g", b"y")), "", tmp_path / "layout")
    named = cli("images", "--cache", cache, "load", str(layout), "--name", "other:2")
    assert named.stdout == "loaded docker.io/library/other:2\n", named.stderr
    listed = cli("images", "--cache", cache, "list")
    header, *rows, where = listed.stdout.splitlines()
    assert header.split() == ["IMAGE", "DIGEST", "SIZE", "LAST", "USED"]
    assert [row.split()[0] for row in rows] == [
        "docker.io/library/other:2",
        "docker.io/team/tool:1",
    ]
    assert where == f"cache: {cache}"
    pruned = cli("images", "--cache", cache, "prune")
    assert pruned.stdout.startswith("deleted ")
    assert cli("images", "--cache", cache, "list").stdout == f"no images in {cache}\n"


def test_load_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    result = cli("images", "--cache", str(tmp_path / "c"), "load", str(junk))
    assert result.returncode == 1
    assert result.stderr == (
        f"error: image '{junk}': not a docker save tarball or an OCI layout (not a tar "
        "archive, nor a directory)\n"
    )
    missing = cli("images", "--cache", str(tmp_path / "c"), "load", str(tmp_path / "nope.tar"))
    assert (missing.returncode, missing.stderr) == (
        2, f"error: {tmp_path / 'nope.tar'}: no such file or directory\n")  # fmt: skip
