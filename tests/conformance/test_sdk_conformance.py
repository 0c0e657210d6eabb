"""The official Northflank Python SDK (northflank 2.1.0, unchanged) against the emulator.

The SDK opens exec sessions and log tails with ``websockets.sync.client.connect()`` outside a
``with`` block, which websockets 17 deprecates; that warning (the SDK's, not ours) is the only
one ignored here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from northflank import ApiCallError, ApiClient, AsyncApiClient
from sdk_testing import PROJECT, deployment, sdk_for, unique_name

from pytest_northflank.emulator import EmulatorServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_the_recipe_flow(sdk: ApiClient, tmp_path: Path) -> None:
    """Section 9 of the contract, call for call."""
    name = unique_name("py sandbox")
    command = "sh -c 'echo booted; sleep infinity'"
    created = sdk.create.service.deployment(project_id=PROJECT, data=deployment(name, command))
    sid = created.data["id"]
    assert sid == name.replace(" ", "-").lower()
    assert created.data["status"]["deployment"]["status"] == "PENDING"
    ready = sdk.helpers.wait_for_service_ready(
        project_id=PROJECT, service_id=sid, poll_interval_s=0.5
    )
    assert ready["status"]["deployment"]["status"] == "COMPLETED"

    result = sdk.exec.run_service_command(project_id=PROJECT, service_id=sid, command="echo hi")
    assert (result.exit_code, result.stdout, result.stderr, result.status) == (
        0, "hi\n", "", "Success"
    )  # fmt: skip
    assert result.ok

    with sdk.exec.open_service_session(
        project_id=PROJECT, service_id=sid, command="cat", tty=False
    ) as session:
        assert session.info.container_name == sid
        assert str(session.info.instance_name).startswith(f"{sid}-")
        session.send("x\n")
        first = next(iter(session))
        assert (first.stream, first.data) == ("stdout", "x\n")
        session.send_eof()
        assert session.wait().exit_code == 0

    local = tmp_path / "hostname"
    local.write_text("sandbox-host\n")
    upload = sdk.files.upload(
        project_id=PROJECT, service_id=sid, local_path=str(local), remote_path="up/h.txt"
    )
    assert upload.target.endswith("h.txt")
    downloaded = tmp_path / "downloaded"
    sdk.files.download(
        project_id=PROJECT, service_id=sid, remote_path="up", local_path=str(downloaded)
    )
    assert tree(downloaded) == {"h.txt": b"sandbox-host\n"}

    with sdk.logs.tail_service_logs(project_id=PROJECT, service_id=sid, recv_timeout=5) as tail:
        line = next(iter(tail))
        assert line.log == "booted"
        assert line.container_id == session.info.instance_name

    assert sdk.delete.service(project_id=PROJECT, service_id=sid, delete_child_objects=True)
    with pytest.raises(ApiCallError) as caught:
        sdk.get.service(project_id=PROJECT, service_id=sid)
    assert caught.value.status == 404


def test_read_calls(sdk: ApiClient, ready_service: Callable[..., str]) -> None:
    sid = ready_service("reads")
    projects = sdk.list.projects()
    assert any(p["id"] == PROJECT for p in projects.data["projects"])
    assert sdk.get.project(project_id=PROJECT).data["id"] == PROJECT
    service = sdk.get.service(project_id=PROJECT, service_id=sid).data
    assert (service["servicePaused"], service["deployment"]["instances"]) == (False, 1)
    containers = sdk.get.service.containers(project_id=PROJECT, service_id=sid).data
    assert [c["status"] for c in containers["containers"]] == ["TASK_RUNNING"]
    team_scoped = sdk.get.service(project_id=PROJECT, service_id=sid, team_id="my-team")
    assert team_scoped.data["id"] == sid


def test_pause_resume_restart_scale(sdk: ApiClient, ready_service: Callable[..., str]) -> None:
    sid = ready_service("lifecycle")
    sdk.pause.service(project_id=PROJECT, service_id=sid)
    paused = sdk.helpers.wait_for_service_paused(project_id=PROJECT, service_id=sid)
    assert paused["servicePaused"] is True
    sdk.resume.service(project_id=PROJECT, service_id=sid, data={})
    sdk.helpers.wait_for_service_ready(project_id=PROJECT, service_id=sid, poll_interval_s=0.05)
    sdk.restart.service(project_id=PROJECT, service_id=sid)
    sdk.helpers.wait_for_service_ready(project_id=PROJECT, service_id=sid, poll_interval_s=0.05)
    sdk.scale.service(project_id=PROJECT, service_id=sid, data={"instances": 1})
    result = sdk.exec.run_service_command(project_id=PROJECT, service_id=sid, command=["true"])
    assert result.exit_code == 0


def test_directory_upload_and_download(
    sdk: ApiClient, ready_service: Callable[..., str], tmp_path: Path
) -> None:
    sid = ready_service("dirs")
    source = tmp_path / "source"
    (source / "nested" / "deeper").mkdir(parents=True)
    (source / "top.txt").write_text("top\n")
    (source / "nested" / "data.bin").write_bytes(os.urandom(70_000))
    (source / "nested" / "deeper" / "unicode-é.txt").write_text("é✓\n")
    # A path relative to the sandbox's working directory: private in either isolation mode
    # (with the directory fallback an absolute /srv/data would be this machine's).
    remote = "conformance-data"
    sdk.files.upload(project_id=PROJECT, service_id=sid, local_path=str(source), remote_path=remote)
    listing = sdk.exec.run_service_command(
        project_id=PROJECT, service_id=sid, command=["find", remote, "-type", "f"]
    )
    assert sorted(listing.stdout.split()) == [
        f"{remote}/nested/data.bin",
        f"{remote}/nested/deeper/unicode-é.txt",
        f"{remote}/top.txt",
    ]
    target = tmp_path / "target"
    sdk.files.download(
        project_id=PROJECT, service_id=sid, remote_path=remote, local_path=str(target)
    )
    assert tree(target) == tree(source)


def test_a_5_mib_random_binary_file_round_trip(
    sdk: ApiClient, ready_service: Callable[..., str], tmp_path: Path
) -> None:
    sid = ready_service("binary")
    payload = os.urandom(5 * 1024 * 1024)
    local = tmp_path / "blob.bin"
    local.write_bytes(payload)
    sdk.files.upload(
        project_id=PROJECT, service_id=sid, local_path=str(local), remote_path="data/blob.bin"
    )
    digest = sdk.exec.run_service_command(
        project_id=PROJECT, service_id=sid, command=["sha256sum", "data/blob.bin"]
    )
    assert digest.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    back = tmp_path / "back"
    sdk.files.download(
        project_id=PROJECT, service_id=sid, remote_path="data/blob.bin", local_path=str(back)
    )
    assert (back / "blob.bin").read_bytes() == payload


def test_non_zero_exits(sdk: ApiClient, ready_service: Callable[..., str]) -> None:
    sid = ready_service("exits")
    result = sdk.exec.run_service_command(
        project_id=PROJECT, service_id=sid, command=["sh", "-c", "echo oops >&2; exit 3"]
    )
    assert (result.exit_code, result.status, result.stderr, result.ok) == (
        3, "Failure", "oops\n", False
    )  # fmt: skip
    shelled = sdk.exec.run_service_command(
        project_id=PROJECT, service_id=sid, command="exit 5", shell="sh -c"
    )
    assert shelled.exit_code == 5
    # The real proxy's `bash "<string>"` (contract section 10).
    bash = sdk.exec.run_service_command(
        project_id=PROJECT, service_id=sid, command="echo 'Hello'", shell="bash"
    )
    assert bash.exit_code == 127
    assert bash.stderr == "bash: echo 'Hello': No such file or directory\n"


def test_a_stdin_streaming_session(sdk: ApiClient, ready_service: Callable[..., str]) -> None:
    sid = ready_service("stream")
    with sdk.exec.open_service_session(
        project_id=PROJECT,
        service_id=sid,
        command=["sh", "-c", 'while read -r line; do echo "got $line"; done; echo bye >&2'],
        tty=False,
        recv_timeout=30,
    ) as session:
        for word in ("alpha", "beta", "gamma"):
            session.send(f"{word}\n")
            chunk = next(iter(session))
            assert (chunk.stream, chunk.data) == ("stdout", f"got {word}\n")
        session.send_eof()
        tail = next(iter(session))
        assert (tail.stream, tail.data) == ("stderr", "bye\n")
        assert session.wait().exit_code == 0


def test_a_tty_session_with_resize(sdk: ApiClient, ready_service: Callable[..., str]) -> None:
    sid = ready_service("tty")
    with sdk.exec.open_service_session(
        project_id=PROJECT, service_id=sid, command="sh", tty_rows=20, tty_columns=70,
        recv_timeout=30,
    ) as session:  # fmt: skip
        seen = ""
        session.send("stty size\n")
        while "20 70" not in seen:
            seen += next(iter(session)).data
        session.resize(rows=50, columns=160)
        session.send("stty size\n")
        while "50 160" not in seen:
            seen += next(iter(session)).data
        session.send("exit 2\n")
        assert session.wait().exit_code == 2


def test_a_log_tail_and_a_range_fetch(
    sdk: ApiClient, ready_service: Callable[..., str], emulator: EmulatorServer
) -> None:
    script = (
        "sh -c 'echo ready; while :; do if [ -e go-flag ]; then rm go-flag; echo went; fi; "
        "sleep 0.02; done'"
    )
    sid = ready_service("logs", script)
    with sdk.logs.tail_service_logs(project_id=PROJECT, service_id=sid, recv_timeout=30) as tail:
        lines = iter(tail)
        assert next(lines).log == "ready"
        sdk.exec.run_service_command(
            project_id=PROJECT, service_id=sid, command=["touch", "go-flag"]
        )
        assert next(lines).log == "went"
    fetched = sdk.logs.fetch_service_logs(project_id=PROJECT, service_id=sid)
    assert [line.log for line in fetched] == ["went", "ready"]  # backward: newest first
    assert all(line.ts.endswith("Z") for line in fetched)


def test_listing_250_services_page_by_page(
    sdk_clean: ApiClient, emulator_clean: EmulatorServer
) -> None:
    names = [f"listed {n:03d}" for n in range(250)]
    for name in names:
        body = deployment(name)
        body["deployment"]["instances"] = 0  # no containers needed to list them
        sdk_clean.create.service.deployment(project_id=PROJECT, data=body)
    expected = [name.replace(" ", "-") for name in names]

    page = sdk_clean.list.services(project_id=PROJECT, per_page=100)
    seen, pages = [s["id"] for s in page.data["services"]], 1
    while page.pagination is not None and page.pagination.has_next_page:
        page = page.pagination.get_next_page()
        seen += [s["id"] for s in page.data["services"]]
        pages += 1
    assert (seen, pages) == (expected, 3)

    everything = sdk_clean.list.services.all(project_id=PROJECT, per_page=40)
    assert [s["id"] for s in everything.data["services"]] == expected


def test_the_async_client(emulator: EmulatorServer, ready_service: Callable[..., str]) -> None:
    sid = ready_service("async")

    async def scenario() -> None:
        client = AsyncApiClient(api_token=emulator.token, base_url=emulator.url)
        service = await client.get.service(project_id=PROJECT, service_id=sid)
        assert service.data["status"]["deployment"]["status"] == "COMPLETED"
        result = await client.exec.arun_service_command(
            project_id=PROJECT, service_id=sid, command=["sh", "-c", "echo async; exit 4"]
        )
        assert (result.stdout, result.exit_code) == ("async\n", 4)
        session = await client.exec.aopen_service_session(
            project_id=PROJECT, service_id=sid, command="cat", tty=False, encoding="base64"
        )
        async with session:
            await session.send(base64.b64encode(b"\x00\xffbytes").decode())
            chunk = await session.__anext__()
            assert base64.b64decode(chunk.data) == b"\x00\xffbytes"
            await session.send_eof()
            assert (await session.wait()).exit_code == 0

    asyncio.run(scenario())


# -- negative paths ----------------------------------------------------------------------------


def test_a_bad_token_is_a_401(emulator: EmulatorServer, ready_service: Callable[..., str]) -> None:
    sid = ready_service("auth")
    wrong = ApiClient(api_token="not-the-token", base_url=emulator.url)
    with pytest.raises(ApiCallError) as caught:
        wrong.list.projects()
    assert caught.value.status == 401
    assert "Invalid API token" in caught.value.message
    with pytest.raises(ApiCallError) as exec_error:
        wrong.exec.run_service_command(project_id=PROJECT, service_id=sid, command=["true"])
    assert exec_error.value.status == 401
    assert "Invalid API token" in exec_error.value.message


def test_a_duplicate_name_is_a_409(sdk: ApiClient, ready_service: Callable[..., str]) -> None:
    sid = ready_service("dupe")
    name = sdk.get.service(project_id=PROJECT, service_id=sid).data["name"]
    with pytest.raises(ApiCallError) as caught:
        sdk.create.service.deployment(project_id=PROJECT, data=deployment(name))
    assert caught.value.status == 409


def test_a_spot_only_cluster_without_a_spot_tag(
    sdk_clean: ApiClient, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.set_spot_only()
    with pytest.raises(ApiCallError) as caught:
        sdk_clean.create.service.deployment(project_id=PROJECT, data=deployment("no spot"))
    assert caught.value.message == (
        "Workload is not tagged as spot, but cluster has only spot nodes configured"
    )
    sdk_clean.add.tag(data={"name": "spot-workload", "useSpotNodes": True})
    assert [t["name"] for t in sdk_clean.list.tags().data["tags"]] == ["spot-workload"]
    created = sdk_clean.create.service.deployment(
        project_id=PROJECT, data=deployment("with spot", tags=["spot-workload"])
    )
    assert created.data["tags"] == ["spot-workload"]


def test_project_creation_fails_like_byoc(
    sdk_clean: ApiClient, emulator_clean: EmulatorServer
) -> None:
    emulator_clean.control.set_project_creation_error()
    with pytest.raises(ApiCallError) as caught:
        sdk_clean.create.project(data={"name": "New Project", "region": "europe-west"})
    assert caught.value.message == "Region not found"


def test_validation_details_reach_the_sdk(sdk: ApiClient) -> None:
    body = deployment("x")
    with pytest.raises(ApiCallError) as caught:
        sdk.create.service.deployment(project_id=PROJECT, data=body)
    assert caught.value.status == 400
    assert caught.value.details == [
        {"path": ["name"], "message": "must be 3-54 characters long, got 1"}
    ]


def test_exec_quirks_the_sdk_copes_with(emulator_clean: EmulatorServer) -> None:
    sdk = sdk_for(emulator_clean)
    sid = sdk.create.service.deployment(project_id=PROJECT, data=deployment("quirks")).data["id"]
    sdk.helpers.wait_for_service_ready(project_id=PROJECT, service_id=sid, poll_interval_s=0.05)
    emulator_clean.control.exit_code_as_string()
    result = sdk.exec.run_service_command(project_id=PROJECT, service_id=sid, command="false")
    assert (result.exit_code, result.raw_frames[-1]["data"]["exitCode"]) == (1, "1")
    emulator_clean.control.drop_next_exec(after_frames=1)
    with pytest.raises(ApiCallError, match="exec WebSocket error"):
        sdk.exec.run_service_command(
            project_id=PROJECT, service_id=sid, command=["sh", "-c", "echo a; echo b"]
        )
    # The drop fault is used up: the next exec is normal.
    assert sdk.exec.run_service_command(project_id=PROJECT, service_id=sid, command="true").ok
