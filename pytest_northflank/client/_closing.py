"""The ``with`` support shared by the client's closeable objects."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

_Closeable = TypeVar("_Closeable", bound="ClosesOnExit")


class ClosesOnExit:
    """``with obj:`` hands back ``obj`` itself and calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Closeable) -> _Closeable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
