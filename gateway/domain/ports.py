"""Ports: what the MAPE-K loop needs from the world, as Protocols. Adapters implement them; fakes too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from gateway.domain.model import Reading, Tag, Value


@runtime_checkable
class Clock(Protocol):
    """Time as the gateway sees it: wall time for timestamps, monotonic time for intervals."""

    def now(self) -> float:
        """POSIX seconds (UTC)."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of a write as the device reports it: confirmed only when the read-back matches."""

    tag: str
    requested: Value
    confirmed: bool
    read_back: Value | None
    detail: str = ""
    duration_s: float = 0.0


class FieldDevice(Protocol):
    """A PLC or RTU the gateway polls and commands. Adapters are async context managers."""

    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    @property
    def tags(self) -> Sequence[Tag]: ...

    async def poll(self) -> list[Reading]:
        """Read every configured tag of the device; never raises for a device fault (readings carry the quality)."""
        ...

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write one writable tag in engineering units and confirm it by read-back. Never retried blindly."""
        ...
