"""The energy tariff: price by hour of the plant's local day, and where the peak is.

Pure: built from plain band tuples (the configuration layer converts its models), no clock of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Band:
    """Hours ``[start_hour, end_hour)`` of the local day at one price."""

    start_hour: int
    end_hour: int
    price_per_kwh: float
    name: str = ""


class Tariff:
    """Price per kWh at any instant; ``utc_offset_h`` turns POSIX time into the plant's local hour."""

    def __init__(self, *, bands: Sequence[Band], utc_offset_h: float = 0.0) -> None:
        self._hourly: list[Band] = [Band(0, 24, 0.0)] * 24
        for band in bands:
            for h in range(band.start_hour, band.end_hour):
                self._hourly[h] = band
        self._offset_s = utc_offset_h * HOUR_S
        self.peak_price = max(b.price_per_kwh for b in self._hourly)
        self.average_price = sum(b.price_per_kwh for b in self._hourly) / 24.0

    @property
    def offset_s(self) -> float:
        """The plant's local time minus UTC, in seconds."""
        return self._offset_s

    def local_time(self, ts: float) -> float:
        """Seconds since 1970-01-01 00:00 in the plant's local time: the date (and so the day type) included."""
        return ts + self._offset_s

    def local_seconds(self, ts: float) -> float:
        """Seconds since the plant's local midnight."""
        return (ts + self._offset_s) % DAY_S

    def hour(self, ts: float) -> int:
        return int(self.local_seconds(ts) // HOUR_S)

    def band(self, ts: float) -> Band:
        return self._hourly[self.hour(ts)]

    def price(self, ts: float) -> float:
        return self._hourly[self.hour(ts)].price_per_kwh

    def in_peak(self, ts: float) -> bool:
        return self.price(ts) >= self.peak_price

    def seconds_to_peak(self, ts: float) -> float:
        """Seconds until the next peak-priced hour begins; 0 inside the peak."""
        if self.in_peak(ts):
            return 0.0
        local = self.local_seconds(ts)
        hour = int(local // HOUR_S)
        for step in range(1, 25):
            if self._hourly[(hour + step) % 24].price_per_kwh >= self.peak_price:
                return (hour + step) * HOUR_S - local
        return float("inf")

    def seconds_to_peak_end(self, ts: float) -> float:
        """Seconds until the current peak ends; 0 outside the peak."""
        if not self.in_peak(ts):
            return 0.0
        local = self.local_seconds(ts)
        hour = int(local // HOUR_S)
        for step in range(1, 25):
            if self._hourly[(hour + step) % 24].price_per_kwh < self.peak_price:
                return (hour + step) * HOUR_S - local
        return float("inf")
