"""Telling a session taken over by another client with our client id from an ordinary lost connection.

The broker keeps one session per client id: when a second gateway connects with the same id, the broker drops the
first, whose reconnect drops the second, and so on, every second or so, for as long as both run. MQTT 5 names it:
the old client gets DISCONNECT with reason 0x8E ("Session taken over"). MQTT 3.1.1 only closes the connection, so
there the watch infers it from ``after`` connections in a row that the broker closed within ``window_s`` of opening
them (a broker that is down refuses connections instead, and a connection that failed to open breaks the row).

A takeover starts an *episode*: the uplink logs one ERROR and records one event, and waits its takeover back-off
before every reconnect while the episode lasts. It ends once a session has been held for ``clear_after_s`` (the
other client, reconnecting at most once a back-off, would have taken it over by then).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.adapters.mqtt.link import LossKind


class DetectedBy(StrEnum):
    REASON_CODE = "reason_code"  # MQTT 5 DISCONNECT 0x8E
    QUICK_DISCONNECTS = "quick_disconnects"  # MQTT 3.1.1: closed right after opening, several times in a row


@dataclass(frozen=True, slots=True)
class Takeover:
    """One session lost to another client; ``first`` when it starts an episode."""

    detected_by: DetectedBy
    disconnects: int  # quick disconnects in a row (MQTT 3.1.1), or 1
    first: bool


class TakeoverWatch:
    """Fed with how each session ended and how long it lasted (real time), and how long the current one has held
    (on the uplink's clock, like the takeover back-off it is measured against)."""

    def __init__(self, *, window_s: float, after: int, clear_after_s: float) -> None:
        self._window_s = window_s
        self._after = after
        self._clear_after_s = clear_after_s
        self._quick = 0
        self.active = False
        self.takeovers = 0  # in the current episode

    def session_ended(self, kind: LossKind | None, *, lasted_s: float) -> Takeover | None:
        """The verdict on a session that ended: a takeover, or None."""
        if kind is LossKind.TAKEN_OVER:
            self._quick = 0
            return self._taken(DetectedBy.REASON_CODE, 1)
        if kind is LossKind.DROPPED and lasted_s < self._window_s:
            self._quick += 1
            if self._quick >= self._after or self.active:
                return self._taken(DetectedBy.QUICK_DISCONNECTS, self._quick)
            return None
        self._quick = 0
        return None

    def connect_failed(self) -> None:
        """A connection that did not open breaks a row of quick disconnects: the broker itself is in trouble."""
        self._quick = 0

    def held(self, held_s: float) -> bool:
        """The current session has lasted ``held_s``; True when that ends an episode."""
        if not self.active or held_s < self._clear_after_s:
            return False
        self.active = False
        self.takeovers = 0
        self._quick = 0
        return True

    def _taken(self, by: DetectedBy, disconnects: int) -> Takeover:
        first = not self.active
        self.active = True
        self.takeovers += 1
        return Takeover(by, disconnects, first)
