"""The exec and log-tail frame codec, alone (no sockets)."""

from __future__ import annotations

import base64
import json
import os

import pytest

from pytest_northflank.client.frames import (
    CompletionFrame,
    ErrorFrame,
    ExecInitFrame,
    LogTailInit,
    LogTailLines,
    OutputFrame,
    build_exec_context,
    coerce_exit_code,
    decode_exec_frame,
    decode_log_tail_frame,
    encode_exec_init,
    encode_log_tail_init,
    encode_payload,
    encode_resize,
    encode_stdin_end,
)
from pytest_northflank.errors import ExecError, TransportError


def test_context_omits_every_none_field() -> None:
    context = build_exec_context(["echo", "hi"], instance_name=None, user=None, tty_rows=None)
    assert context == {
        "command": ["echo", "hi"],
        "shell": "none",
        "encoding": "base64",
        "tty": False,
    }
    assert None not in context.values()


def test_context_keeps_given_fields_with_wire_names() -> None:
    context = build_exec_context(
        "sh", shell="none", tty=True, tty_rows=40, tty_columns=120, instance_name="pod-1", user=0
    )
    assert context["ttyRows"] == 40
    assert context["ttyColumns"] == 120
    assert context["instanceName"] == "pod-1"
    assert context["user"] == 0


def test_init_frame_shape() -> None:
    frame = json.loads(encode_exec_init("tok", {"command": ["true"], "shell": "none"}))
    assert frame == {
        "type": "init",
        "data": {
            "auth": {"type": "apiToken", "apiToken": "tok"},
            "context": {"command": ["true"], "shell": "none"},
        },
    }


def test_init_refuses_null_context_fields() -> None:
    with pytest.raises(ValueError, match="null"):
        encode_exec_init("tok", {"command": ["true"], "user": None})


def test_log_tail_init_carries_only_auth() -> None:
    frame = json.loads(encode_log_tail_init("tok"))
    assert frame == {"type": "init", "data": {"auth": {"type": "apiToken", "apiToken": "tok"}}}


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 192 * 1024])
def test_payload_is_json_with_independent_base64(size: int) -> None:
    chunk = os.urandom(size)
    frame = json.loads(encode_payload(chunk))
    assert frame["type"] == "payload"
    assert base64.b64decode(frame["data"], validate=True) == chunk


def test_payload_chunks_of_three_bytes_concatenate_cleanly() -> None:
    data = os.urandom(3 * 1000 + 2)
    frames = [encode_payload(data[i : i + 300]) for i in range(0, len(data), 300)]
    joined = "".join(json.loads(f)["data"] for f in frames)
    # Every frame but the last is unpadded, so even concatenating the strings decodes right.
    assert base64.b64decode(joined) == data


def test_stdin_end_and_resize() -> None:
    assert json.loads(encode_stdin_end()) == {"type": "stdInEnd"}
    assert json.loads(encode_resize(30, 100)) == {
        "type": "resize",
        "data": {"ttyRows": 30, "ttyColumns": 100},
    }
    with pytest.raises(ValueError, match="positive"):
        encode_resize(0, 80)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (42, 42), ("42", 42), (" 7 ", 7), (3.0, 3), ("x", None), (None, None), (True, None)],
)
def test_exit_code_accepts_numbers_and_numeric_strings(value: object, expected: int | None) -> None:
    assert coerce_exit_code(value) == expected


def test_decode_init_ok_and_refused() -> None:
    ok = decode_exec_frame(
        '{"type":"init","data":{"auth":"successful","context":'
        '{"instanceName":"pod-a","containerName":"main"}}}'
    )
    assert ok == ExecInitFrame(ok=True, instance_name="pod-a", container_name="main")
    refused = decode_exec_frame('{"type":"init","data":{"auth":"failed","message":"bad token"}}')
    assert refused == ExecInitFrame(ok=False, message="bad token")


def test_decode_output_base64_is_exact_bytes_from_text_or_binary_frames() -> None:
    payload = bytes(range(256))
    text = json.dumps({"type": "stdOut", "data": base64.b64encode(payload).decode()})
    assert decode_exec_frame(text) == OutputFrame("stdout", payload)
    assert decode_exec_frame(text.encode()) == OutputFrame("stdout", payload)
    err = json.dumps({"type": "stdErr", "data": base64.b64encode(b"oops").decode()})
    assert decode_exec_frame(err) == OutputFrame("stderr", b"oops")


def test_decode_output_utf8_mode() -> None:
    frame = decode_exec_frame('{"type":"stdOut","data":"h\\u00e9"}', base64_output=False)
    assert frame == OutputFrame("stdout", "hé".encode())


def test_decode_output_rejects_bad_base64() -> None:
    with pytest.raises(ExecError, match="base64"):
        decode_exec_frame('{"type":"stdOut","data":"not base64!"}')


def test_decode_completion_with_string_exit_code() -> None:
    frame = decode_exec_frame(
        '{"type":"completion","data":{"exitCode":"7","status":"Failure","message":"x"}}'
    )
    assert frame == CompletionFrame(exit_code=7, status="Failure", message="x")
    numeric = decode_exec_frame('{"type":"completion","data":{"exitCode":0,"status":"Success"}}')
    assert numeric == CompletionFrame(exit_code=0, status="Success", message=None)


def test_decode_error_frame() -> None:
    assert decode_exec_frame('{"type":"error","data":{"message":"boom"}}') == ErrorFrame("boom")
    assert decode_exec_frame('{"type":"error"}') == ErrorFrame("unknown error")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ('{"type":"keepalive"}', "unknown frame type 'keepalive'"),
        ("not json", "not JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"type":"completion"}', "completion without data"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_decode_rejects_bad_frames(raw: str | bytes, match: str) -> None:
    with pytest.raises(ExecError, match=match):
        decode_exec_frame(raw)


def test_bad_frame_quote_is_bounded() -> None:
    with pytest.raises(ExecError) as info:
        decode_exec_frame("x" * 100_000)
    assert len(str(info.value)) < 400


def test_log_tail_frames() -> None:
    assert decode_log_tail_frame('{"type":"init","data":{"auth":"successful"}}') == LogTailInit(
        ok=True, message=None
    )
    lines = decode_log_tail_frame(
        '{"type":"log-lines","data":[{"containerId":"c1","log":"hello","ts":"2024-01-01T00:00:00Z"},'
        '{"container_id":"c2","message":"alias","timestamp":"2024-01-01T00:00:01Z"}]}'
    )
    assert isinstance(lines, LogTailLines)
    assert [(e.container_id, e.log, e.ts) for e in lines.entries] == [
        ("c1", "hello", "2024-01-01T00:00:00Z"),
        ("c2", "alias", "2024-01-01T00:00:01Z"),
    ]
    assert decode_log_tail_frame('{"type":"error","data":{"message":"gone"}}') == ErrorFrame("gone")
    with pytest.raises(TransportError, match="unknown frame type"):
        decode_log_tail_frame('{"type":"stdOut","data":"x"}')
