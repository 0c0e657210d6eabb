"""Unit tests of exec frame handling: the init context, payload decoding, output encoding."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_northflank.emulator.routes.exec import (
    ExecRefused,
    decode_payload,
    encode_output,
    parse_exec_context,
)
from pytest_northflank.emulator.routes.ws_common import FrameError, parse_frame


@pytest.mark.parametrize(
    ("context", "argv"),
    [
        ({"command": ["ls", "-l", "a b"], "shell": "none"}, ["ls", "-l", "a b"]),
        ({"command": "ls -l 'a b'", "shell": "none"}, ["ls", "-l", "a b"]),
        ({"command": "ls -l 'a b'"}, ["ls", "-l", "a b"]),  # no shell: none (JS sessions)
        ({"command": "echo $HOME && :", "shell": "bash -c"}, ["bash", "-c", "echo $HOME && :"]),
        ({"command": ["echo", "a b"], "shell": "sh -c"}, ["sh", "-c", "echo 'a b'"]),
        # The real proxy runs `bash "<string>"`: bash reads the string as a script path.
        ({"command": "echo 'Hello'", "shell": "bash"}, ["bash", "echo 'Hello'"]),
        ({"shell": "sh"}, ["sh"]),
        ({"shell": "bash", "command": ""}, ["bash"]),
    ],
)  # fmt: skip
def test_argv_from_shell_and_command(context: dict[str, Any], argv: list[str]) -> None:
    assert parse_exec_context(context).argv == argv


def test_no_command_and_no_shell_is_an_interactive_default_shell() -> None:
    request = parse_exec_context({"shell": "none"})
    assert (request.argv, request.interactive_fallback) == (["bash"], True)
    assert parse_exec_context(None).interactive_fallback


def test_defaults_are_utf8_without_tty() -> None:
    request = parse_exec_context({"command": ["true"]})
    assert (request.encoding, request.tty, request.rows, request.columns) == (
        "utf-8",
        False,
        24,
        80,
    )


@pytest.mark.parametrize(
    "field", ["command", "shell", "encoding", "tty", "ttyRows", "ttyColumns", "instanceName",
              "containerName", "user", "group"]
)  # fmt: skip
def test_null_context_fields_are_refused_by_name(field: str) -> None:
    with pytest.raises(ExecRefused, match=f"'{field}' must not be null"):
        parse_exec_context({"command": ["true"], field: None})


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"command": 3}, "'command' must be str or list"),
        ({"command": ["ls", 3]}, "list of strings"),
        ({"command": ["", "x"]}, "empty program"),
        ({"command": "ls", "tty": "yes"}, "'tty' must be bool"),
        ({"command": "ls", "ttyRows": True}, "'ttyRows' must be integer"),
        ({"command": "ls", "ttyRows": 0}, "from 1 to 65535"),
        ({"command": "ls", "encoding": "latin-1"}, "utf-8 or base64"),
        ({"command": "echo 'open", "shell": "none"}, "cannot be split"),
        ({"command": "   "}, "'command' is empty"),
        ({"command": "ls", "user": "nobody-such-user"}, "not available"),
        ([], "must be an object"),
    ],
)
def test_bad_contexts_say_what_is_wrong(context: Any, message: str) -> None:
    with pytest.raises(ExecRefused, match=message):
        parse_exec_context(context)


def test_unknown_context_fields_are_ignored() -> None:
    assert parse_exec_context({"command": ["true"], "execLocationHint": "eu"}).argv == ["true"]


@given(st.lists(st.binary(max_size=100), max_size=8))
def test_each_base64_payload_frame_decodes_on_its_own(chunks: list[bytes]) -> None:
    frames = [base64.b64encode(chunk).decode() for chunk in chunks]
    decoded = [decode_payload(frame, "base64", n) for n, frame in enumerate(frames, 1)]
    assert b"".join(decoded) == b"".join(chunks)


@given(st.binary(max_size=200))
def test_output_frames_are_independently_decodable(data: bytes) -> None:
    assert base64.b64decode(encode_output(data, "base64")) == data


def test_payload_errors_name_the_frame() -> None:
    assert decode_payload("héllo", "utf-8", 1) == "héllo".encode()
    with pytest.raises(FrameError, match="payload frame 4 is not valid base64"):
        decode_payload("not base64!", "base64", 4)
    with pytest.raises(FrameError, match="payload frame 2: data must be a string"):
        decode_payload(None, "base64", 2)


def test_frames_may_be_text_or_binary_json() -> None:
    assert parse_frame({"text": '{"type":"stdInEnd"}'}) == {"type": "stdInEnd"}
    assert parse_frame({"bytes": b'{"type":"stdInEnd"}'}) == {"type": "stdInEnd"}
    with pytest.raises(FrameError, match="not valid JSON"):
        parse_frame({"text": "{nope"})
    with pytest.raises(FrameError, match="must be a JSON object"):
        parse_frame({"text": "[1]"})
