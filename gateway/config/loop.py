"""Parameters of the MAPE-K control loop: the plant it controls, its rules and its tariff.

Every ``*_tag`` field names a configured tag; the loader checks that it exists (and is writable where the loop
writes it).
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, model_validator

from gateway.config.common import PositiveSeconds, StrictModel, TagRef

#: Fields the loop writes to; the loader checks the tags they name are writable.
WRITTEN_TAG_FIELDS = frozenset({"start_tag", "heartbeat_tag", "control_word_tag", "setpoint_tag", "prv_setpoint_tag"})


class TankSettings(StrictModel):
    """Elevated tank ET-01: geometry and levels in metres above the tank floor."""

    level_tag: TagRef = "LIT-201"
    diameter_m: float = Field(default=12.0, gt=0)
    overflow_m: float = Field(default=8.0, gt=0)
    high_high_m: float = 7.8
    high_m: float = 7.5
    low_m: float = 2.5
    fire_reserve_m: float = Field(default=2.0, ge=0, description="Never planned into normal use.")
    start_lead_m: float = 4.0
    start_lag_m: float = 3.0
    stop_m: float = 7.0
    high_float_tag: TagRef | None = "LSHH-201"

    @model_validator(mode="after")
    def _ordered(self) -> TankSettings:
        order = [
            ("fire_reserve_m", self.fire_reserve_m),
            ("low_m", self.low_m),
            ("start_lag_m", self.start_lag_m),
            ("start_lead_m", self.start_lead_m),
            ("stop_m", self.stop_m),
            ("high_m", self.high_m),
            ("high_high_m", self.high_high_m),
            ("overflow_m", self.overflow_m),
        ]
        for (lo_name, lo), (hi_name, hi) in itertools.pairwise(order):
            if lo > hi:
                raise ValueError(f"{lo_name} ({lo}) must not be above {hi_name} ({hi})")
        return self


class ClearwellSettings(StrictModel):
    level_tag: TagRef = "LIT-101"
    diameter_m: float = Field(default=18.0, gt=0)
    dry_run_m: float = Field(default=0.8, ge=0, description="No pump runs below this level.")
    low_m: float = Field(default=1.2, ge=0, description="CW_LOW below this level.")


class PumpSettings(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    running_tag: TagRef
    fault_tag: TagRef
    auto_remote_tag: TagRef
    start_tag: TagRef
    available_tag: TagRef | None = None
    power_tag: TagRef | None = None
    run_hours_tag: TagRef | None = None
    starts_tag: TagRef | None = None
    speed_tag: TagRef | None = None


def _default_pumps() -> list[PumpSettings]:
    return [
        PumpSettings(
            name=f"P-10{i}",
            running_tag=f"YS-10{i}",
            fault_tag=f"YA-10{i}",
            auto_remote_tag=f"HS-10{i}",
            available_tag=f"YL-10{i}",
            start_tag=f"XC-10{i}",
            power_tag=f"JI-10{i}",
            run_hours_tag=f"RH-10{i}",
            starts_tag=f"ST-10{i}",
        )
        for i in (1, 2, 3)
    ]


class StationSettings(StrictModel):
    flow_tag: TagRef = "FIT-110"
    pressure_tag: TagRef = "PIT-110"


class ZoneSettings(StrictModel):
    flow_tag: TagRef = "FIT-301"
    pressure_tag: TagRef = "PIT-301"
    prv_setpoint_tag: TagRef = "PCV-301.SP"
    prv_min_m: float = 35.0
    prv_max_m: float = 55.0
    prv_day_m: float = 45.0
    prv_night_m: float = 40.0
    prv_max_step_m: float = Field(default=2.0, gt=0, description="Largest PRV setpoint change per command.")


class TreatmentSettings(StrictModel):
    flow_tag: TagRef = "FIT-100"
    setpoint_tag: TagRef = "FIC-100"
    min_lps: float = 0.0
    max_lps: float = 60.0
    max_step_lps: float = Field(default=5.0, gt=0)


class ChlorineSettings(StrictModel):
    plant_tag: TagRef = "AIT-100"
    zone_tag: TagRef = "AIT-301"
    low_mg_l: float = 0.2
    high_mg_l: float = 4.0


class OperatingRules(StrictModel):
    max_starts_per_hour: int = Field(default=4, ge=1)
    min_run_s: float = Field(default=600.0, ge=0)
    min_off_s: float = Field(default=600.0, ge=0)
    runhours_imbalance_h: float = Field(default=10.0, gt=0)
    no_flow_fraction: float = Field(default=0.1, gt=0, lt=1, description="Running with less flow than this = trip.")
    no_flow_delay_s: float = Field(default=30.0, ge=0)
    rated_flow_lps: float = Field(default=35.0, gt=0)


class TariffBand(StrictModel):
    start_hour: int = Field(ge=0, le=23)
    end_hour: int = Field(ge=1, le=24)
    price_per_kwh: float = Field(ge=0)
    name: str = ""


def _default_tariff() -> list[TariffBand]:
    return [
        TariffBand(start_hour=0, end_hour=7, price_per_kwh=0.08, name="off-peak"),
        TariffBand(start_hour=7, end_hour=17, price_per_kwh=0.15, name="shoulder"),
        TariffBand(start_hour=17, end_hour=21, price_per_kwh=0.30, name="peak"),
        TariffBand(start_hour=21, end_hour=22, price_per_kwh=0.15, name="shoulder"),
        TariffBand(start_hour=22, end_hour=24, price_per_kwh=0.08, name="off-peak"),
    ]


class TariffSettings(StrictModel):
    """Energy tariff by hour of the plant's local day (``utc_offset_h`` from UTC)."""

    utc_offset_h: float = Field(default=0.0, ge=-14, le=14)
    bands: list[TariffBand] = Field(default_factory=_default_tariff)
    prefill_hours: float = Field(default=2.0, ge=0, description="Pre-fill window before the peak.")

    @model_validator(mode="after")
    def _covers_day(self) -> TariffSettings:
        hours = [0] * 24
        for band in self.bands:
            if band.end_hour <= band.start_hour:
                raise ValueError(f"band {band.name or band.start_hour}: end_hour must be after start_hour")
            for h in range(band.start_hour, band.end_hour):
                hours[h] += 1
        if any(n != 1 for n in hours):
            raise ValueError("tariff bands must cover each hour of the day exactly once")
        return self


class ValidationSettings(StrictModel):
    """Monitor's checks on readings before anything acts on them."""

    max_rate_per_s: dict[str, float] = Field(
        default_factory=lambda: {"LIT-201": 0.05, "LIT-101": 0.05},
        description="Spike limit: largest credible change per second, by tag.",
    )
    flatline_s: dict[str, float] = Field(
        default_factory=lambda: {"LIT-201": 900.0, "LIT-101": 1800.0},
        description="A value that does not move at all for this long while its neighbours do is suspect.",
    )
    twin_residual_m: float = Field(default=0.3, gt=0, description="Level disagreeing with the tank model by more.")


class LoopSettings(StrictModel):
    """The MAPE-K control loop."""

    enabled: bool = True
    mode: Literal["auto", "local", "maintenance"] = Field(
        default="auto", description="auto: the gateway controls; local: the PLC does; maintenance: no writes."
    )
    cycle_s: PositiveSeconds = Field(default=1.0, description="Analyze/Plan/Execute period.")
    heartbeat_tag: TagRef | None = "GW-HB"
    control_word_tag: TagRef | None = "HS-CTRL"
    tank: TankSettings = Field(default_factory=TankSettings)
    clearwell: ClearwellSettings = Field(default_factory=ClearwellSettings)
    pumps: list[PumpSettings] = Field(default_factory=_default_pumps, min_length=1)
    station: StationSettings = Field(default_factory=StationSettings)
    zone: ZoneSettings = Field(default_factory=ZoneSettings)
    treatment: TreatmentSettings = Field(default_factory=TreatmentSettings)
    chlorine: ChlorineSettings = Field(default_factory=ChlorineSettings)
    rules: OperatingRules = Field(default_factory=OperatingRules)
    tariff: TariffSettings = Field(default_factory=TariffSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    decision_history: int = Field(default=50, ge=1, description="Decisions kept in memory for status views.")
    command_timeout_s: PositiveSeconds = Field(default=5.0, description="Longest an Execute write may take.")
