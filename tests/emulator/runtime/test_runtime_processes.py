"""Processes in a sandbox, with real processes and pseudo-terminals: exec, tty, environment,
logs and failures."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from emulator_testing import eventually
from runtime_testing import (
    Harness,
    Result,
    collect,
    marked_processes,
    run,
    run_exec,
    sh,
)

from pytest_northflank.emulator.runtime import (
    CommandNotExecutable,
    CommandNotFound,
    ContainerRuntime,
)
from pytest_northflank.errors import EmulatorError

# -- start and exec ---------------------------------------------------------------------------


def test_exec_exit_codes(harness: Harness) -> None:
    container = harness.start()
    assert container.is_running()
    assert container.exit_code() is None
    assert run(run_exec(container, ["true"])).exit_code == 0
    assert sh(container, "exit 7").exit_code == 7
    assert sh(container, "kill -TERM $$").exit_code == 128 + signal.SIGTERM


def test_stdin_stdout_and_stderr_are_separate_streams(harness: Harness) -> None:
    container = harness.start()
    result = sh(container, "cat; echo to-stderr >&2", stdin=b"hello\nworld\n")
    assert result.exit_code == 0
    assert result.stdout == b"hello\nworld\n"
    assert result.stderr == b"to-stderr\n"


def test_binary_data_round_trips_in_bounded_chunks(harness: Harness) -> None:
    container = harness.start()
    data = bytes(range(256)) * 2048  # 512 KiB, every byte value
    result = run(run_exec(container, ["cat"], stdin=data))
    assert result.exit_code == 0
    assert result.stdout == data
    assert all(len(chunk) <= 32 * 1024 for _, chunk in result.chunks)


def test_exec_runs_in_the_workdir_with_a_session_of_its_own(harness: Harness) -> None:
    container = harness.start()
    result = sh(container, 'pwd; ps -o sid= -p $$; echo "$$"')
    cwd, session, pid = result.stdout.decode().split()
    assert cwd == container.workdir
    assert session == pid  # a session leader


def test_exec_does_not_inherit_ignored_signals(harness: Harness) -> None:
    # Python ignores SIGPIPE and SIGXFSZ; a sandbox process must not.
    container = harness.start(["sh", "-c", "grep SigIgn /proc/self/status; exec sleep infinity"])
    result = sh(container, "grep SigIgn /proc/self/status")
    assert result.stdout.split() == [b"SigIgn:", b"0000000000000000"]
    assert eventually(lambda: bool(container.log_lines()))
    assert container.log_lines()[0].text.split() == ["SigIgn:", "0000000000000000"]


def test_concurrent_execs(harness: Harness) -> None:
    container = harness.start()

    async def many() -> list[Result]:
        return await asyncio.gather(*(run_exec(container, ["echo", str(n)]) for n in range(8)))

    results = run(many())
    assert [r.stdout for r in results] == [f"{n}\n".encode() for n in range(8)]


# -- tty ------------------------------------------------------------------------------------


async def read_until(output: Any, needle: bytes, seen: bytearray) -> None:
    while needle not in seen:
        stream, data = await anext(output)
        assert stream == "stdout"
        seen += data


def test_tty_has_the_requested_size_and_follows_resize(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> tuple[bytes, int]:
        process = await container.exec(
            ["sh", "-c", "tty; test -t 0 && echo is-a-tty; stty size; read line; stty size"],
            tty=True,
            rows=33,
            columns=101,
        )
        output = process.output()
        seen = bytearray()
        await read_until(output, b"33 101", seen)
        process.resize(50, 132)
        await process.write(b"go\n")
        await read_until(output, b"50 132", seen)
        async for _, data in output:
            seen += data
        return bytes(seen), await process.wait()

    seen, code = run(scenario())
    assert code == 0
    assert b"/dev/pts/" in seen
    assert b"is-a-tty\r\n" in seen  # the terminal translates \n to \r\n
    assert seen.index(b"33 101") < seen.index(b"50 132")


def test_tty_resize_signals_the_foreground_process(harness: Harness) -> None:
    container = harness.start()
    script = 'trap "stty size" WINCH; echo ready; while :; do sleep 0.05; done'

    async def scenario() -> bytes:
        process = await container.exec(["sh", "-c", script], tty=True)
        output = process.output()
        seen = bytearray()
        await read_until(output, b"ready", seen)
        process.resize(41, 99)
        await read_until(output, b"41 99", seen)
        process.kill()
        assert await process.wait() == 128 + signal.SIGKILL
        async for _, data in output:
            seen += data
        return bytes(seen)

    assert b"41 99" in run(scenario())


def test_tty_close_stdin_sends_end_of_file(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> tuple[bytes, int]:
        process = await container.exec(["cat"], tty=True)
        await process.write(b"typed\n")
        await process.close_stdin()
        result = await collect(process)
        return result.stdout, result.exit_code

    out, code = run(scenario())
    assert code == 0
    assert out.count(b"typed\r\n") == 2  # the echo, then cat's copy


# -- environment ------------------------------------------------------------------------------


def test_env_reaches_main_process_and_exec(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NF_EMULATOR_OWN_SECRET", "must-not-leak")
    container = harness.start(
        ["sh", "-c", 'echo "main FOO=$FOO"; exec sleep infinity'], env={"FOO": "from-start"}
    )
    assert eventually(lambda: bool(container.log_lines()))
    assert container.log_lines()[0].text == "main FOO=from-start"

    result = sh(container, 'echo "$FOO|$BAR|$HOME|$PATH"', env={"BAR": "extra"})
    foo, bar, home, path = result.stdout.decode().strip().split("|")
    assert (foo, bar) == ("from-start", "extra")
    assert home == container.env["HOME"]
    assert "/usr/bin" in path.split(":")
    assert sh(container, 'echo "$FOO"', env={"FOO": "override"}).stdout == b"override\n"
    environment = sh(container, "env").stdout.decode()
    assert "NF_EMULATOR_OWN_SECRET" not in environment
    assert "must-not-leak" not in environment


def test_default_home(harness: Harness) -> None:
    container = harness.start()
    home = container.env["HOME"]
    if container.isolation == "namespace":
        assert home == "/root"
        assert container.workdir == "/"
    else:
        assert home == str(container.directory / "home")
        assert container.env["TMPDIR"] == str(container.directory / "tmp")
        assert container.workdir == str(container.directory / "work")
    assert sh(container, 'touch "$HOME/written" && ls "$HOME"').stdout == b"written\n"


# -- logs -------------------------------------------------------------------------------------


def test_logs_are_lines_with_utc_timestamps(harness: Harness) -> None:
    before = datetime.now(timezone.utc)
    container = harness.start(
        ["sh", "-c", "echo one; echo two >&2; printf 'three\\r\\n'; printf tail"]
    )
    assert eventually(lambda: not container.is_running())
    assert container.exit_code() == 0
    assert eventually(lambda: len(container.log_lines()) == 4)
    after = datetime.now(timezone.utc)
    lines = container.log_lines()
    texts = sorted((line.stream, line.text) for line in lines)
    assert texts == [("stderr", "two"), ("stdout", "one"), ("stdout", "tail"), ("stdout", "three")]
    assert [line.index for line in lines] == [0, 1, 2, 3]
    for line in lines:
        assert line.ts.tzinfo is not None
        assert line.ts.utcoffset() == timezone.utc.utcoffset(None)
        assert before <= line.ts <= after
    assert container.log_lines(2) == lines[2:]
    assert container.log_lines(10) == []


def test_log_keeps_the_newest_lines(isolation: str, tmp_path: Path) -> None:
    with ContainerRuntime(isolation, state_dir=tmp_path, max_log_lines=5) as runtime:  # type: ignore[arg-type]
        container = runtime.start(f"logs-{uuid.uuid4().hex[:8]}", ["seq", "1", "20"], {})
        assert eventually(lambda: not container.is_running())
        assert eventually(
            lambda: container.log_lines()[-1:] != [] and container.log_lines()[-1].text == "20"
        )
        lines = container.log_lines()
        assert [line.text for line in lines] == ["16", "17", "18", "19", "20"]
        assert [line.index for line in lines] == [15, 16, 17, 18, 19]
        assert [line.text for line in container.log_lines(0)] == [line.text for line in lines]
        assert [line.text for line in container.log_lines(18)] == ["19", "20"]


# -- failures -------------------------------------------------------------------------------


def test_exec_into_a_stopped_container_raises(harness: Harness) -> None:
    container = harness.start()
    container.stop(grace=0)
    with pytest.raises(EmulatorError, match="is not running"):
        run(container.exec(["true"]))


def test_exec_after_the_main_process_ended_raises(harness: Harness) -> None:
    container = harness.start(["sh", "-c", "exit 3"])
    assert eventually(lambda: not container.is_running())
    assert container.exit_code() == 3
    with pytest.raises(EmulatorError, match="is not running"):
        run(container.exec(["true"]))


def test_exec_of_a_missing_program(harness: Harness) -> None:
    container = harness.start()
    with pytest.raises(CommandNotFound) as caught:
        run(container.exec(["no-such-program-xyz", "arg"]))
    error = caught.value
    assert error.exit_code == 127
    assert str(error) == "no-such-program-xyz: No such file or directory"
    assert isinstance(error, FileNotFoundError)
    assert isinstance(error, EmulatorError)
    with pytest.raises(CommandNotFound, match="/no/such/path: No such file"):
        run(container.exec(["/no/such/path"]))
    assert run(run_exec(container, ["true"])).exit_code == 0  # still usable


def test_exec_of_a_file_that_is_not_executable(harness: Harness) -> None:
    container = harness.start()
    path = os.path.join(container.workdir, "not-executable")
    assert sh(container, f"echo 'echo hi' > {path}").exit_code == 0
    with pytest.raises(CommandNotExecutable) as caught:
        run(container.exec([path]))
    assert caught.value.exit_code == 126
    assert str(caught.value) == f"{path}: Permission denied"


def test_start_of_a_missing_program_leaves_nothing(harness: Harness) -> None:
    with pytest.raises(CommandNotFound, match="no-such-main: No such file or directory"):
        harness.start(["no-such-main"])
    assert harness.runtime.containers() == []
    assert list(harness.runtime.state_dir.iterdir()) == []


def test_kill_ends_the_exec_and_its_children(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> int:
        process = await container.exec(["sh", "-c", "sleep 1004 & sleep 1005; echo never"])
        assert eventually(lambda: len(marked_processes(harness.marker)) >= 4, timeout=5)
        process.kill()
        result = await collect(process)
        assert result.stdout == b""
        return result.exit_code

    assert run(scenario()) == 128 + signal.SIGKILL
    assert eventually(lambda: len(marked_processes(harness.marker)) == 1)  # the main process


def test_cancelled_exec_leaves_nothing_behind(harness: Harness) -> None:
    container = harness.start()

    async def scenario() -> int:
        cancelled = 0
        for delay in (0, 0, 0.001, 0.003, 0.008, 0.015, 0.03):
            task = asyncio.ensure_future(container.exec(["sleep", "1006"]))
            await asyncio.sleep(delay)
            task.cancel()
            try:
                process = await task
            except asyncio.CancelledError:
                cancelled += 1
                continue
            process.kill()  # it got started before the cancellation landed
            assert await process.wait() == 128 + signal.SIGKILL
            process.close()
        return cancelled

    assert run(scenario()) >= 2  # at least the ones cancelled before their first step
    assert eventually(
        lambda: [p for p in marked_processes(harness.marker) if "1006" in p.cmdline()] == []
    )
    assert container.is_running()


def test_bad_input_is_refused_with_a_clear_message(harness: Harness) -> None:
    runtime = harness.runtime
    with pytest.raises(EmulatorError, match="argv must be a non-empty list"):
        runtime.start("bad-argv", [], {})
    with pytest.raises(EmulatorError, match="argv must be a non-empty list"):
        runtime.start("bad-argv", "sleep 1", {})  # type: ignore[arg-type]
    with pytest.raises(EmulatorError, match=r"env\['SECRET'\] contains a NUL"):
        runtime.start("bad-env", ["true"], {"SECRET": "val\0ue"})
    with pytest.raises(EmulatorError, match="invalid variable name 'A=B'"):
        runtime.start("bad-env", ["true"], {"A=B": "x"})
    with pytest.raises(EmulatorError, match="sandbox_id must be"):
        runtime.start("", ["true"], {})
    container = harness.start()
    with pytest.raises(EmulatorError, match="already exists"):
        runtime.start(container.sandbox_id, ["sleep", "infinity"], {})
    with pytest.raises(EmulatorError, match=r"exec argv\[1\] must be a string"):
        run(container.exec(["echo", 1]))  # type: ignore[list-item]
    with pytest.raises(EmulatorError, match="tty rows must be"):
        run(container.exec(["true"], tty=True, rows=0))
