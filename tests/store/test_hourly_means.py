"""Hourly means of a tag from the SQLite store across retention: the raw readings, the aggregates they are folded
into, and an hour split between the two (``gateway/adapters/sqlite/history.py``)."""

from __future__ import annotations

from gateway.clock import SteppedClock
from gateway.config.store import RetentionSettings
from gateway.domain.model import Quality, QualityReason, Reading
from gateway.domain.twin import HourlyMean
from tests.store.conftest import StoreFactory

DAY = 86_400.0


def _flow(start: float) -> list[Reading]:
    """Three hours of FIT-301 from ``start``, a good reading every 30 s (10, 20, 30 L/s by hour), and one substituted
    value in the first five minutes."""
    out = [
        Reading("FIT-301", 10.0 * (1 + t // 3600), Quality.GOOD, start + t, start + t, "L/s")
        for t in range(0, 10800, 30)
    ]
    out.append(Reading("FIT-301", 99.0, Quality.UNCERTAIN, start + 45, start + 45, "L/s", QualityReason.SUBSTITUTED))
    return out


async def test_hourly_means_are_the_same_from_raw_readings_aggregates_or_both(
    open_store: StoreFactory, clock: SteppedClock
) -> None:
    start = clock.now()
    retention = RetentionSettings(raw_days=1, downsample_interval_s=300)
    window = {"since": start - DAY, "until": start + DAY}
    # No uplink: readings that unsent telemetry names stay raw until sent, and these must be folded.
    async with open_store(retention=retention, uplink_enabled=False) as store:
        await store.record_readings("rtu", _flow(start))
        await store.flush()
        raw = await store.hourly_means("FIT-301", **window)
        clock.set(DAY + 5430.0)  # the cutoff in the middle of a slot of the second hour: folded in part
        await store.run_retention()
        split = await store.hourly_means("FIT-301", **window)
        clock.set(2 * DAY)
        await store.run_retention()
        folded = await store.hourly_means("FIT-301", **window)
    assert raw == [
        HourlyMean(start, 10.0, 3600.0),
        HourlyMean(start + 3600, 20.0, 3600.0),
        HourlyMean(start + 7200, 30.0, 3600.0),
    ]
    assert split == folded
    # A bucket holding a value that was not good is left out whole: its mean mixes them.
    assert folded == [HourlyMean(start, 10.0, 3300.0), *raw[1:]]
