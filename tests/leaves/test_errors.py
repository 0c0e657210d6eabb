import pytest

import pytest_northflank
from pytest_northflank import errors


def test_every_public_error_derives_from_the_single_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.NorthflankError), name
        assert getattr(pytest_northflank, name) is cls


def test_api_error_message_names_status_and_request() -> None:
    err = errors.NotFoundError("Service not found", status=404, method="GET", path="/v1/projects/p")
    assert str(err) == "404 Service not found (GET /v1/projects/p)"
    assert err.status == 404


def test_rate_limited_error_carries_reset_time() -> None:
    err = errors.RateLimitedError("Too many requests", status=429, reset_after=12.5)
    assert err.reset_after == 12.5
    with pytest.raises(errors.ApiError):
        raise err


def test_argument_error_is_a_config_error_and_a_value_error() -> None:
    err = errors.ArgumentError("lines must be a whole number of at least 1, got 0")
    assert isinstance(err, errors.ConfigError)
    assert isinstance(err, errors.NorthflankError)
    with pytest.raises(ValueError, match="lines"):
        raise err


def test_command_timeout_carries_its_partial_result() -> None:
    from pytest_northflank.sandbox import CommandResult

    partial = CommandResult("sleep 9", None, b"start\n", b"", 1.0)
    err = errors.CommandTimeout("timed out", timeout=1.0, result=partial)
    assert (err.timeout, err.result, str(err)) == (1.0, partial, "timed out")
    assert isinstance(err, errors.ExecError)
    assert errors.CommandTimeout("timed out", timeout=2).result is None


def test_a_long_output_tail_is_cut_after_masking() -> None:
    from pytest_northflank.sandbox import FAILURE_TAIL_CHARS, CommandResult

    secret = "s3cret-" + "0123456789abcdefghij" * 3
    # One very long line (a progress bar) with a secret that straddles the cut point: cutting
    # before masking would show the secret's end.
    stdout = ("." * 10_000 + secret + "." * (FAILURE_TAIL_CHARS - 20)).encode()
    result = CommandResult("build", 2, stdout, b"", 1.0, masked=(secret,))
    with pytest.raises(errors.CommandFailed) as caught:
        result.check()
    message = str(caught.value)
    assert "--- end of stdout ---\n..." in message
    assert "abcdefghij" not in message
    assert len(message) < FAILURE_TAIL_CHARS + 200
    none = CommandResult("sleep 9", None, b"", b"", 1.0, sandbox="nft-a")
    with pytest.raises(errors.CommandFailed, match=r"^command 'sleep 9' did not finish in sandbox"):
        none.check()
