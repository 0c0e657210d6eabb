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
