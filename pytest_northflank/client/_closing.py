"""The ``with`` support shared by the client's closeable objects."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TypeVar

_Closeable = TypeVar("_Closeable", bound="ClosesOnExit")


class ClosesOnExit(ABC):
    """``with obj:`` hands back ``obj`` itself and calls ``obj.close()`` on the way out."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds; called by ``__exit__``."""

    def __enter__(self: _Closeable) -> _Closeable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
