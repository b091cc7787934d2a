"""Conditions that do not chatter: thresholds with hysteresis, and on/off delays.

A symptom is raised only after its condition has held for ``on_delay_s`` and cleared only after it has been false for
``off_delay_s``; a level threshold also needs the value to move back past ``hysteresis`` before it counts as false.
Noise around a threshold therefore raises nothing, and a real crossing raises exactly once.
"""

from __future__ import annotations

from enum import Enum


class Change(Enum):
    RAISED = "raised"
    CLEARED = "cleared"


class Debounce:
    """A boolean made steady: true once the input held true ``on_delay_s``, false once it held false ``off_delay_s``."""

    __slots__ = ("_since", "active", "off_delay_s", "on_delay_s")

    def __init__(self, *, on_delay_s: float = 0.0, off_delay_s: float = 0.0) -> None:
        self.on_delay_s = on_delay_s
        self.off_delay_s = off_delay_s
        self.active = False
        self._since: float | None = None  # when the input last began to disagree with ``active``

    def update(self, condition: bool, now: float) -> Change | None:
        """Feed the raw condition; returns the change of the steady state, if any."""
        if condition == self.active:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        delay = self.off_delay_s if self.active else self.on_delay_s
        if now - self._since < delay:
            return None
        self.active = condition
        self._since = None
        return Change.RAISED if condition else Change.CLEARED


class Threshold:
    """``value < limit`` (or ``>`` when ``above``), that turns false only past ``limit ± hysteresis``."""

    __slots__ = ("above", "hysteresis", "limit")

    def __init__(self, *, limit: float, hysteresis: float = 0.0, above: bool = False) -> None:
        self.limit = limit
        self.hysteresis = hysteresis
        self.above = above

    def holds(self, value: float, *, active: bool) -> bool:
        if self.above:
            edge = self.limit - self.hysteresis if active else self.limit
            return value >= edge
        edge = self.limit + self.hysteresis if active else self.limit
        return value < edge


class LevelCondition:
    """A threshold with hysteresis behind a debounce: the usual shape of a level or quality alarm."""

    __slots__ = ("debounce", "threshold")

    def __init__(
        self, *, limit: float, hysteresis: float, above: bool = False, on_delay_s: float = 0.0, off_delay_s: float = 0.0
    ) -> None:
        self.threshold = Threshold(limit=limit, hysteresis=hysteresis, above=above)
        self.debounce = Debounce(on_delay_s=on_delay_s, off_delay_s=off_delay_s)

    @property
    def active(self) -> bool:
        return self.debounce.active

    def update(self, value: float | None, now: float) -> Change | None:
        """Feed a value; ``None`` (no usable value) holds the present state."""
        if value is None:
            return None
        return self.debounce.update(self.threshold.holds(value, active=self.debounce.active), now)
