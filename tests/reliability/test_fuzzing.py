"""Fuzzing: the client's frame decoders and tar reader, and the emulator's frame parsing, given
arbitrary input, raise their own typed errors only and never hang (a generous deadline per
example catches a hang or a blow-up without timing anything that works)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reliability_helpers import PROJECT, make_sandbox
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.frames import decode_exec_frame, decode_log_tail_frame
from pytest_northflank.client.tarstream import extract_file, extract_tree
from pytest_northflank.emulator.routes.exec import ExecRefused, decode_payload, parse_exec_context
from pytest_northflank.emulator.routes.ws_common import FrameError, parse_frame
from pytest_northflank.emulator.validation import (
    check_instances_body,
    check_project_body,
    check_service_body,
    check_tag_body,
)
from pytest_northflank.errors import (
    ApiValidationError,
    ExecError,
    FileTransferError,
    NorthflankError,
    TransportError,
)

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer
    from pytest_northflank.sandbox import Sandbox

# Long enough that only a hang or an explosion trips it, whatever the machine's load.
FUZZ = settings(
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    max_examples=300,
)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["", "42", "-1", "AAAA", "=", "stdOut", "successful", "\x00", "\ud800"])
)
json_values = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
EXEC_TYPES = ["init", "stdOut", "stdErr", "completion", "error", "payload", "stdInEnd", "resize"]
FIELDS = ["exitCode", "status", "message", "auth", "context", "instanceName", "ttyRows"]
frame_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(EXEC_TYPES) | st.text(max_size=10) | json_leaf},
    optional={
        "data": json_values
        | st.dictionaries(st.sampled_from(FIELDS), json_values | st.text(), max_size=4)
    },
)


def _encoded(frame: dict[str, Any]) -> str:
    return json.dumps(frame)


raw_frames = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    frame_objects.map(_encoded),
    frame_objects.map(lambda frame: _encoded(frame).encode()),
    st.integers(1, 50_000).map(lambda depth: "[" * depth + "]" * depth),  # deep nesting
    st.integers(1, 50_000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
)


# ------------------------------------------------------------------ the client's decoders


@FUZZ
@given(raw=raw_frames, base64_output=st.booleans())
def test_the_exec_frame_decoder_raises_exec_errors_only(
    raw: str | bytes, base64_output: bool
) -> None:
    message = ""
    try:
        decode_exec_frame(raw, base64_output=base64_output)
    except ExecError as exc:
        message = str(exc)
    assert len(message) < 1000  # a bad frame is quoted, never pasted whole


@FUZZ
@given(raw=raw_frames)
def test_the_log_tail_decoder_raises_transport_errors_only(raw: str | bytes) -> None:
    message = ""
    try:
        decode_log_tail_frame(raw)
    except TransportError as exc:
        message = str(exc)
    assert len(message) < 1000


NAMES = st.one_of(
    st.text(max_size=24),
    st.sampled_from(
        ["a", "a/b", "d/", ".", "./", "..", "../x", "/etc/passwd", "a/../../x", "l/x", "C:x"]
    ),
)
KINDS = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.LNKTYPE,
        tarfile.SYMTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.DIRTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
        b"V",
        b"S",
        b"Z",
    ]
)
PAX_KEYS = ["mtime", "size", "path", "linkpath", "uid", "uname", "GNU.sparse.map", "hdrcharset"]
PAX_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["nan", "inf", "-1", "1e400", str(2**70), "../../x", "BINARY", "0,1,2"]),
)
members = st.tuples(
    NAMES,
    KINDS,
    NAMES,  # link target
    st.binary(max_size=64),
    st.integers(-(2**12), 2**16),  # mode
    st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True)),  # mtime
    st.dictionaries(st.sampled_from(PAX_KEYS), PAX_VALUES, max_size=3),
)


def _archive(entries: list[Any], tar_format: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        for name, kind, link, data, mode, mtime, pax in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.mtime = kind, link, mode, mtime
            if pax:
                info.pax_headers = dict(pax)
            if kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return buffer.getvalue()


@st.composite
def tar_streams(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, or archives of hostile members, possibly corrupted or cut short."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=3000))
    tar_format = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
    entries = draw(st.lists(members, max_size=5))
    try:
        raw = _archive(entries, tar_format)
    except (ValueError, tarfile.TarError, UnicodeError, OverflowError, TypeError):
        assume(False)  # tarfile itself cannot write this one
        raise AssertionError("unreachable") from None
    if raw and draw(st.booleans()):
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=16)) + raw[at + 1 :]
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@FUZZ
@given(raw=tar_streams())
def test_the_tar_reader_raises_transfer_errors_only_and_stays_inside(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as top:
        for extract, destination in (
            (extract_tree, Path(top, "tree")),
            (extract_file, Path(top, "file", "target")),
        ):
            with contextlib.suppress(FileTransferError):  # UnsafeArchiveError is one
                extract(io.BufferedReader(io.BytesIO(raw)), destination)  # type: ignore[operator]
        # Whatever the archive said, nothing landed beside the two targets.
        assert set(os.listdir(top)) <= {"tree", "file"}
        assert (
            set(os.listdir(Path(top, "file"))) <= {"target"} if Path(top, "file").exists() else True
        )
        for path in Path(top).rglob("*"):
            if path.is_symlink():
                assert os.path.realpath(path).startswith(os.path.realpath(top) + os.sep)


# ------------------------------------------------------------------ the emulator's parsers


@FUZZ
@given(
    message=st.one_of(
        raw_frames.map(lambda raw: {"bytes": raw} if isinstance(raw, bytes) else {"text": raw}),
        st.fixed_dictionaries({}, optional={"text": st.none(), "bytes": st.none()}),
    )
)
def test_the_emulator_frame_parser_raises_frame_errors_only(message: dict[str, Any]) -> None:
    with contextlib.suppress(FrameError):
        assert isinstance(parse_frame(message), dict)


CONTEXT_KEYS = ["command", "shell", "encoding", "tty", "ttyRows", "ttyColumns", "instanceName",
                "containerName", "user", "group"]  # fmt: skip


@FUZZ
@given(
    context=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(CONTEXT_KEYS) | st.text(max_size=6),
            json_values | st.lists(st.text(max_size=8), max_size=4),
            max_size=6,
        ),
    ),
    payload=json_values,
    encoding=st.sampled_from(["utf-8", "base64"]),
)
def test_the_emulator_exec_parsers_raise_their_refusals_only(
    context: Any, payload: Any, encoding: Any
) -> None:
    try:
        request = parse_exec_context(context)
    except ExecRefused:
        pass
    else:
        assert request.argv
        assert all(isinstance(arg, str) for arg in request.argv)
    with contextlib.suppress(FrameError):
        assert isinstance(decode_payload(payload, encoding, 1), bytes)


SERVICE_KEYS = ["name", "description", "tags", "billing", "deployment", "ports",
                "runtimeEnvironment", "createOptions", "stageId"]  # fmt: skip
INNER_KEYS = ["instances", "external", "docker", "deploymentPlan", "imagePath", "configType",
              "customCommand", "gracePeriodSeconds", "storage", "gpu", "enabled"]  # fmt: skip
bodies = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(SERVICE_KEYS),
        json_values
        | st.dictionaries(
            st.sampled_from(INNER_KEYS),
            json_values | st.dictionaries(st.sampled_from(INNER_KEYS), json_values, max_size=3),
            max_size=4,
        ),
        max_size=6,
    ),
)


@FUZZ
@given(body=bodies)
def test_the_emulator_request_checks_raise_400s_only(body: Any) -> None:
    for check in (
        check_service_body,
        check_project_body,
        check_tag_body,
        lambda b: check_tag_body(b, partial=True),
        lambda b: check_instances_body(b, what="scale"),
        lambda b: check_instances_body(b, what="resume"),
    ):
        status = 400
        try:
            check(body)
        except ApiValidationError as exc:
            status = exc.status
        assert status == 400


# ------------------------------------------------------- the emulator over a real socket


@pytest.fixture(scope="module")
def target(client: NorthflankClient) -> Iterator[Sandbox]:
    made = make_sandbox(client)
    yield made
    made.delete()


# Commands the fuzzed sessions may start: harmless whatever isolation the emulator has.
SAFE_COMMANDS = st.sampled_from([["cat"], "cat", ["true"], ["sleep", "0.1"], ["head", "-c", "5"]])


@st.composite
def sessions(draw: st.DrawFn, token: str) -> list[str | bytes]:
    """Frames of one exec connection: an init (right token and a harmless command, or
    anything else), then anything at all."""
    if draw(st.booleans()):
        context = draw(
            st.fixed_dictionaries(
                {"command": SAFE_COMMANDS},
                optional={
                    "shell": st.sampled_from(["none", "sh -c"]),
                    "encoding": st.sampled_from(["utf-8", "base64"]) | json_leaf,
                    "tty": st.booleans() | json_leaf,
                    "ttyRows": st.integers(-5, 70_000) | json_leaf,
                    "ttyColumns": st.integers(-5, 70_000),
                    "instanceName": json_leaf,
                    "user": json_leaf,
                },
            )
        )
        first: str | bytes = json.dumps(
            {
                "type": "init",
                "data": {"auth": {"type": "apiToken", "apiToken": token}, "context": context},
            }
        )
    else:
        first = draw(raw_frames)
    rest = draw(
        st.lists(
            raw_frames
            | st.fixed_dictionaries(
                {"type": st.sampled_from(["payload", "stdInEnd", "resize", "init"])},
                optional={"data": json_values | st.binary(max_size=40).map(lambda b: b.hex())},
            ).map(_encoded),
            max_size=6,
        )
    )
    return [first, *rest]


def _drive(url: str, frames: list[str | bytes]) -> None:
    """Send the frames, read a few answers, then hang up (at any point: leaving mid-command
    is fuzz too)."""
    with connect(url, open_timeout=30, close_timeout=5, max_size=None) as ws:
        try:
            for frame in frames:
                ws.send(frame)
            for _ in range(3):
                ws.recv(timeout=0.2)
        except (ConnectionClosed, TimeoutError):
            pass


def test_the_emulator_survives_arbitrary_frames_over_a_real_socket(
    emulator: EmulatorServer, target: Sandbox
) -> None:
    base = emulator.url.replace("http://", "ws://")
    exec_url = f"{base}/v1/command-exec/projects/{PROJECT}/services/{target.id}"
    logs_url = f"{base}/v1/projects/{PROJECT}/services/{target.id}/logs?queryType=tail"

    @settings(
        max_examples=30,
        deadline=timedelta(seconds=30),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(frames=sessions(emulator.token), logs=st.lists(raw_frames, min_size=1, max_size=3))
    def connection(frames: list[str | bytes], logs: list[str | bytes]) -> None:
        _drive(exec_url, frames)
        _drive(logs_url, logs)

    connection()
    # The server still answers, still runs commands, and no fuzzed command is left running.
    info = httpx.get(
        f"{emulator.url}/_emulator/info", headers={"Authorization": f"Bearer {emulator.token}"}
    )
    assert info.status_code == 200
    assert target.run(["echo", "alive"], check=True).stdout == "alive\n"
    if emulator.isolation == "namespace":  # a directory sandbox sees the host's processes
        processes = target.run(["ps", "-eo", "args"], check=True).stdout.splitlines()
        assert [p for p in processes if p.split()[:1] in (["cat"], ["head"], ["sleep"])] == [
            "sleep infinity"
        ]


def test_no_server_answer_is_fatal_to_the_client_beyond_its_typed_errors() -> None:
    """Bodies a broken or hostile API could send are read as errors, not crashes."""
    from pytest_northflank.client.rest import api_error

    for body in (b"[" * 100_000, b"\xff\xfe", b'{"error": 3}', b'{"error": {"message": []}}'):
        error = api_error(500, body, method="GET", path="/v1/x")
        assert isinstance(error, NorthflankError)
