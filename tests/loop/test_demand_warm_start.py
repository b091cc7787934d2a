"""The demand forecast's warm start: ``ControlLoop.restore()`` seeds the profiles of each day type from the zone flow
the store holds, instead of starting again from the configured multipliers after every restart."""

from __future__ import annotations

import dataclasses

from structlog.testing import capture_logs

from gateway.config.loop import LoopSettings
from gateway.domain.errors import StoreError
from gateway.domain.model import Quality, Reading
from gateway.domain.twin import WEEKDAY, WEEKEND, HourlyMean
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.loop.harness import Harness, make

DAY, HOUR = 86_400.0, 3600.0
# The plant at UTC+1; the harness starts at 2026-01-01T00:00Z, a Thursday, 01:00 local.
SETTINGS = LoopSettings.model_validate(
    {"strategy": "hysteresis", "tariff": {"utc_offset_h": 1.0}, "twin": {"demand_history_days": 14}}
)


def _flow_at(local: float) -> float:
    """Weekdays 40 L/s, weekends 15 L/s, plus the local hour: 2026-01-01 is day 20454 since 1970, a Thursday."""
    day, hour = divmod(int(local // HOUR), 24)
    weekend = (day + 3) % 7 + 1 >= 6
    return (15.0 if weekend else 40.0) + hour


def _stored_history(h: Harness, days: float, *, older: float = 0.0) -> None:
    """``days`` of FIT-301 up to now, a good reading every five minutes, as the store would hold them; ``older``
    days before those at 999 L/s (outside the window looked at)."""
    now = h.clock.now()
    t = now - (days + older) * DAY
    while t < now:
        flow = 999.0 if t < now - days * DAY else _flow_at(t + HOUR)
        h.store.readings.append(("tank-rtu", Reading("FIT-301", flow, Quality.GOOD, t, t, "L/s")))
        t += 300.0


async def test_restore_seeds_each_day_types_profile_from_the_stored_zone_flow() -> None:
    h = make(SETTINGS, tank=5.0)
    _stored_history(h, days=14.5, older=6)  # what is older than the 14 local days looked at does not count
    with capture_logs() as logs:
        await h.loop.restore()
    demand = h.loop.knowledge.twin.demand
    assert demand.profile(WEEKDAY) == [40.0 + hour for hour in range(24)]
    assert demand.profile(WEEKEND) == [15.0 + hour for hour in range(24)]
    seeded = next(e for e in logs if e["event"] == "loop.demand_seeded")
    # 14 whole local days before today (10 weekdays, 4 weekend days) and today's first local hour.
    assert (seeded["days"], seeded["hours"]) == ({WEEKDAY: 11, WEEKEND: 4}, {WEEKDAY: 24, WEEKEND: 24})
    saturday_noon = h.loop.tariff.local_time(h.clock.now()) + 2 * DAY + 11 * HOUR
    assert demand.forecast(saturday_noon, slot_s=HOUR, slots=1) == [15.0 + 12]


async def test_without_history_the_forecast_starts_from_the_configured_multipliers() -> None:
    h = make(SETTINGS, tank=5.0)
    configured = list(h.loop.knowledge.twin.demand.hourly)
    with capture_logs() as logs:
        await h.loop.restore()
    assert h.loop.knowledge.twin.demand.profile(WEEKEND) == configured
    assert [e["stored_hours"] for e in logs if e["event"] == "loop.demand_not_seeded"] == [0]


async def test_the_warm_start_can_be_turned_off() -> None:
    settings = LoopSettings.model_validate({"strategy": "hysteresis", "twin": {"demand_history_days": 0}})
    h = make(settings, tank=5.0)
    configured = list(h.loop.knowledge.twin.demand.hourly)
    _stored_history(h, days=3)
    assert await h.loop.seed_demand() is None
    assert h.loop.knowledge.twin.demand.profile(WEEKDAY) == configured


class _HistoryUnreadable(InMemoryKnowledgeStore):
    async def hourly_means(
        self, tag: str, *, since: float, until: float, utc_offset_s: float = 0.0
    ) -> list[HourlyMean]:
        raise StoreError("database disk image is malformed")


async def test_a_store_that_cannot_answer_leaves_the_configured_profile_and_the_loop_runs() -> None:
    h = make(SETTINGS, tank=5.0)
    loop = dataclasses.replace(h.loop, store=_HistoryUnreadable(clock=h.clock))
    with capture_logs() as logs:
        assert not await loop.restore()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["loop.demand_seed_failed"]
    assert h.loop.knowledge.twin.demand.by_type[WEEKDAY] == [None] * 24
    await h.run(60)
    assert h.decisions
