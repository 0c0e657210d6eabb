"""The image config as Northflank applies it: command rules, user lookup, environment."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from image_builder import Layer

from pytest_northflank.emulator.images.config import (
    ImageConfig,
    main_argv,
    resolve_user,
    sandbox_env,
)
from pytest_northflank.emulator.images.unpack import unpack_layer

IMAGE = ImageConfig.from_json(
    {"config": {"Entrypoint": ["/entry.sh"], "Cmd": ["serve", "--port", "80"],
                "Env": ["PATH=/opt/bin", "A=1", "broken"], "WorkingDir": "/app", "User": "web"}}
)  # fmt: skip


@pytest.mark.parametrize(
    ("config_type", "argv"),
    [
        ("default", ["/entry.sh", "serve", "--port", "80"]),
        ("customCommand", ["/entry.sh", "sleep", "1"]),
        ("customEntrypoint", ["/bin/sh"]),  # Kubernetes drops the image's Cmd
        ("customEntrypointCustomCommand", ["/bin/sh", "sleep", "1"]),
    ],
)
def test_command_rules(config_type: str, argv: list[str]) -> None:
    assert main_argv(IMAGE, config_type, ["/bin/sh"], ["sleep", "1"]) == argv


def test_config_fields_and_environment() -> None:
    assert (IMAGE.env, IMAGE.workdir, IMAGE.user) == ({"PATH": "/opt/bin", "A": "1"}, "/app", "web")
    env = sandbox_env(IMAGE, "box", {"A": "2"})
    assert env == {"PATH": "/opt/bin", "HOSTNAME": "box", "A": "2", "HOME": "/root"}
    assert main_argv(ImageConfig(), "default") == []  # the caller fails the deployment


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    lower = Layer().directory("etc").file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"
                                          b"web:x:33:44::/var/www:/bin/sh\n")  # fmt: skip
    lower.file("etc/group", b"root:x:0:\nstaff:x:50:\n")
    upper = Layer().directory("etc")  # the top layer leaves passwd alone
    paths = [tmp_path / "lower", tmp_path / "upper"]
    for layer, path in zip([lower, upper], paths, strict=True):
        unpack_layer(io.BytesIO(layer.tar()), path)
    return list(reversed(paths))  # top first


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", (0, 0, None)),
        ("web", (33, 44, "/var/www")),
        ("33", (33, 44, "/var/www")),
        ("web:staff", (33, 50, "/var/www")),
        ("1234:5678", (1234, 5678, None)),
    ],
)
def test_users_from_the_image(
    layers: list[Path], user: str, expected: tuple[int, int, str | None]
) -> None:
    assert resolve_user(user, layers) == expected


def test_unknown_user_names_are_refused(layers: list[Path]) -> None:
    with pytest.raises(LookupError, match="user 'nobody' is not in the image's /etc/passwd"):
        resolve_user("nobody", layers)
    with pytest.raises(LookupError, match="group 'wheel' is not in the image's /etc/group"):
        resolve_user("web:wheel", layers)
