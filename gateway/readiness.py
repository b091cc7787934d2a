"""Whether a field device can be relied on: for ``/readyz``, ``gateway status`` and the live view.

An adapter's own health (``DeviceHealth``) only says whether its last request got an answer. An OPC UA server that
answers every read with a Bad status, or a PLC that answers every request with an exception, is connected and "ok"
by that measure, while the loop has nothing to work with (COMM_LOSS, FAILSAFE_LOCAL). So a device is ready only
when all of these hold:

- its adapter is connected and its last operation worked;
- its circuit breaker (where it has one) is not open;
- its last poll brought at least one usable reading (Monitor's ``DeviceState.failed`` is false);
- its last usable poll is no older than the device's stale limit (a poller that stopped, or polls that overrun).

Each unmet condition is named, in words an operator can act on.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.domain.model import Quality, Reading
from gateway.domain.ports import DeviceHealth
from gateway.mapek.monitor import DeviceState


@dataclass(frozen=True, slots=True)
class DeviceReadiness:
    """A device's readiness and, when not ready, why (one short phrase per unmet condition)."""

    name: str
    problems: tuple[str, ...]
    health: DeviceHealth
    last_good_age_s: float | None

    @property
    def ready(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)

    def as_check(self) -> dict[str, Any]:
        """The ``/readyz`` entry: ``ready`` and ``reason`` first, then the facts behind them."""
        h = self.health
        age = None if self.last_good_age_s is None else round(self.last_good_age_s, 1)
        return {
            "ready": self.ready,
            "reason": self.reason or None,
            "connected": h.connected,
            "state": h.state,
            "breaker": h.breaker,
            "last_good_age_s": age,
            "last_error": h.last_error or None,
        }


def assess_device(
    health: DeviceHealth,
    state: DeviceState | None,
    *,
    now: float,
    stale_after_s: float,
    last_readings: Iterable[Reading] = (),
) -> DeviceReadiness:
    """Readiness of one device from its adapter's health, Monitor's record of its polls (``state``; None when it
    is not polled) and its latest readings (to say why they were bad)."""
    age = None if state is None or state.last_good_at is None else max(0.0, now - state.last_good_at)
    problems = [*_link_problems(health), *_poll_problems(state, age, stale_after_s, last_readings)]
    return DeviceReadiness(health.name, tuple(problems), health, age)


def _link_problems(h: DeviceHealth) -> list[str]:
    problems = []
    if not h.connected:
        problems.append("not connected" + (f" ({h.last_error})" if h.last_error else ""))
    elif h.state == "failing":
        problems.append(f"failing ({h.last_error})" if h.last_error else "failing")
    if h.breaker == "open":
        problems.append(f"circuit breaker open after {h.consecutive_failures} failures")
    return problems


def _poll_problems(
    state: DeviceState | None, age: float | None, stale_after_s: float, last: Iterable[Reading]
) -> list[str]:
    if state is None or state.last_poll_at is None:
        return ["not polled yet"]
    problems = []
    if state.failed:
        problems.append(f"all {state.readings} readings bad{_why(last)}" if state.readings else "no readings")
    if age is None:
        problems.append("no usable reading yet")
    elif age > stale_after_s:
        problems.append(f"stale: no usable reading for {age:.1f} s (limit {stale_after_s:g} s)")
    if state.clock_skew_s is not None:  # its readings are uncertain (clock_skew): the loop will not control on them
        side = "ahead" if state.clock_skew_s > 0 else "behind"
        problems.append(f"clock skew: source timestamps {abs(state.clock_skew_s):.0f} s {side} of the gateway's clock")
    return problems


def _why(readings: Iterable[Reading]) -> str:
    reasons = collections.Counter(r.reason.value or r.quality.value for r in readings if r.quality is not Quality.GOOD)
    if not reasons:
        return ""
    return " (" + ", ".join(f"{reason} ×{n}" for reason, n in reasons.most_common()) + ")"
