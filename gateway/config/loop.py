"""Parameters of the MAPE-K control loop: the plant it controls, its rules and its tariff.

Every ``*_tag`` field names a configured tag; the loader checks that it exists (and is writable where the loop
writes it).
"""

from __future__ import annotations

import itertools
from datetime import date
from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.config.common import PositiveSeconds, StrictModel, TagRef

#: Fields the loop writes to; the loader checks the tags they name are writable.
WRITTEN_TAG_FIELDS = frozenset(
    {
        "start_tag",
        "speed_tag",
        "heartbeat_tag",
        "control_word_tag",
        "setpoint_tag",
        "prv_setpoint_tag",
        "alarm_reset_tag",
        "plc_start_lead_tag",
        "plc_start_lag_tag",
        "plc_stop_tag",
    }
)


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
    plc_high_high_tag: TagRef | None = Field(
        default="XA-HIHI", description="The PLC's high-high interlock (cross-checked against the level)."
    )
    plc_start_lead_tag: TagRef | None = Field(
        default="LIC-201.START_LEAD", description="The PLC's own levels, settable remotely within fire reserve..high."
    )
    plc_start_lag_tag: TagRef | None = "LIC-201.START_LAG"
    plc_stop_tag: TagRef | None = "LIC-201.STOP"
    plc_level_max_step_m: float = Field(default=1.0, gt=0, description="Largest change of a PLC level per request.")

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
    plc_dry_run_tag: TagRef | None = Field(
        default="XA-DRYRUN", description="The PLC's dry-run interlock (cross-checked against the level)."
    )


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
    starts_last_hour_tag: TagRef | None = Field(default=None, description="The PLC's starts in the rolling hour.")
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
            starts_last_hour_tag=f"SH-10{i}",
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
    prv_night_start_hour: int = Field(default=0, ge=0, le=23, description="Local hour the night setpoint begins.")
    prv_night_end_hour: int = Field(default=5, ge=0, le=24, description="Local hour the day setpoint returns.")
    prv_burst_m: float = Field(default=38.0, description="PRV setpoint while a burst is open.")
    remote_hold_s: float = Field(
        default=3600.0,
        ge=0,
        description="An operator's setpoint (any remote set_setpoint, not only the PRV's) holds this long against "
        "the loop's own plans.",
    )


class TreatmentSettings(StrictModel):
    flow_tag: TagRef = "FIT-100"
    setpoint_tag: TagRef = "FIC-100"
    min_lps: float = 0.0
    max_lps: float = 60.0
    max_step_lps: float = Field(default=5.0, gt=0)
    nominal_lps: float = Field(default=26.5, ge=0, description="Setpoint restored once the clearwell recovers.")
    restore_above_m: float = Field(default=2.0, description="Clearwell level at which the nominal flow returns.")


class ChlorineSettings(StrictModel):
    plant_tag: TagRef = "AIT-100"
    zone_tag: TagRef = "AIT-301"
    low_mg_l: float = 0.2
    high_mg_l: float = 4.0


class OperatingRules(StrictModel):
    """The safety envelope's limits (see docs/loop.md); no plan and no remote request can get past them."""

    max_starts_per_hour: int = Field(default=4, ge=1)
    min_run_s: float = Field(default=600.0, ge=0)
    min_off_s: float = Field(default=600.0, ge=0)
    runhours_imbalance_h: float = Field(default=10.0, gt=0)
    no_flow_fraction: float = Field(default=0.1, gt=0, lt=1, description="Running with less flow than this = trip.")
    no_flow_delay_s: float = Field(default=30.0, ge=0)
    rated_flow_lps: float = Field(default=35.0, gt=0)
    fail_to_start_s: float = Field(default=15.0, gt=0, description="A started pump must report running by then.")
    dry_run_margin_m: float = Field(default=0.2, ge=0, description="No start below the dry-run level plus this.")
    max_input_age_s: float = Field(default=15.0, gt=0, description="Readings older than this are not acted on.")
    substitute_max_s: float = Field(
        default=43200.0, ge=0, description="Longest the twin may stand in for a suspect tank level (0 = never)."
    )
    setpoint_min_interval_s: float = Field(
        default=60.0, ge=0, description="Shortest time between two changes of one setpoint."
    )


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


_PLANT_MULTIPLIERS = [
    0.45, 0.40, 0.35, 0.35, 0.40, 0.60, 1.05, 1.55, 1.60, 1.35, 1.15, 1.10,
    1.15, 1.10, 1.00, 0.95, 1.05, 1.30, 1.50, 1.55, 1.35, 1.10, 0.80, 0.60,
]  # fmt: skip


class TwinSettings(StrictModel):
    """The plant model the loop predicts with (docs/plant.md); the demand profile is learned from the zone meter."""

    shutoff_head_m: float = Field(default=65.0, gt=0, description="Pump head at zero flow, H0.")
    curve_k: float = Field(default=12245.0, gt=0, description="Pump curve coefficient k in H = H0 - k(Q/n)^2.")
    system_k: float = Field(default=1778.0, ge=0, description="Rising main K in Hs = static + K Q^2.")
    bep_flow_lps: float = Field(default=35.0, gt=0)
    eta_pump_max: float = Field(default=0.78, gt=0, le=1)
    eta_motor: float = Field(default=0.93, gt=0, le=1)
    eta_vfd: float = Field(default=0.97, gt=0, le=1)
    tank_floor_m: float = 140.0
    clearwell_floor_m: float = 100.0
    demand_mean_lps: float = Field(default=25.0, ge=0)
    demand_multipliers: list[float] = Field(
        default_factory=lambda: list(_PLANT_MULTIPLIERS), min_length=24, max_length=24
    )
    demand_learn_rate: float = Field(default=0.2, ge=0, le=1, description="Weight of each day's hour in the profile.")
    demand_bias_tau_s: float = Field(default=1800.0, gt=0, description="Smoothing of today's demand vs profile.")
    demand_weekend_days: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default_factory=lambda: [6, 7],
        max_length=7,
        description="ISO weekdays (1 = Monday .. 7 = Sunday) learned as the weekend profile; the rest: weekday.",
    )
    demand_holidays: list[date] = Field(
        default_factory=list, description="Local dates learned and forecast with the weekend profile."
    )
    demand_history_days: int = Field(
        default=0,
        ge=0,
        description="Days of stored zone flow the profiles are seeded from on start (0: none; reading the raw "
        "readings scans every tag's rows in the window, so leave it at 0 on a store of thousands of tags).",
    )
    leak_lps: float = Field(default=1.5, ge=0)
    leak_ref_pressure_m: float = Field(default=45.0, gt=0)
    residual_window_s: float = Field(default=3600.0, gt=0, description="Window of the level-vs-flows residual.")


class ScheduleSettings(StrictModel):
    """The tariff-aware look-ahead schedule (strategy = "schedule")."""

    slot_s: float = Field(default=900.0, ge=60)
    horizon_h: float = Field(default=24.0, ge=1, le=72)
    replan_s: float = Field(default=900.0, gt=0, description="Recompute at least this often.")
    replan_deviation_m: float = Field(default=0.4, gt=0, description="...or when the level leaves the plan by this.")
    level_step_m: float = Field(default=0.1, gt=0)
    floor_m: float = Field(default=2.6, description="Lowest planned level (the reactive floor is the tank's low_m).")
    top_m: float = Field(default=7.5, description="Highest planned level (below high-high).")
    max_pumps: int = Field(default=2, ge=1, description="Pumps the schedule may plan at once (the rest is standby).")
    start_penalty_eur: float = Field(default=0.5, ge=0, description="Cost charged per start: fewer, longer runs.")
    energy_weight_eur_per_kwh: float = Field(default=0.0, ge=0, description="Extra weight on energy, not just cost.")
    clearwell_min_m: float = Field(default=1.5, ge=0, description="Lowest planned clearwell level.")


class SymptomSettings(StrictModel):
    """Delays and thresholds of Analyze."""

    level_on_delay_s: float = Field(default=10.0, ge=0)
    level_hysteresis_m: float = Field(default=0.1, ge=0)
    comm_loss_s: float = Field(default=10.0, gt=0, description="A device without a good poll this long is lost.")
    suspect_on_delay_s: float = Field(default=60.0, ge=0)
    flatline_min_move_m: float = Field(default=0.05, gt=0, description="Twin movement that a flat line contradicts.")
    burst_step_lps: float = Field(default=5.0, gt=0, description="Zone inflow above the expected by more = burst.")
    burst_max_step_lps: float = Field(default=20.0, gt=0, description="Larger steps: fire flow; PRV left alone.")
    burst_pressure_drop_m: float = Field(
        default=0.0, ge=0, description="Pressure drop a burst must also show; 0: the flow step alone (a PRV hides it)."
    )
    burst_short_s: float = Field(default=300.0, gt=0, description="Window of the recent zone flow's mean.")
    burst_reference_s: float = Field(default=1800.0, gt=0, description="Reference window before the recent one.")
    burst_on_delay_s: float = Field(default=300.0, ge=0)
    night_start_hour: int = Field(default=1, ge=0, le=23, description="Night flow window (MNF_RISE), local.")
    night_end_hour: int = Field(default=5, ge=1, le=24)
    mnf_rise_lps: float = Field(default=2.0, gt=0, description="MNF_RISE: night flow this far above its baseline.")
    mnf_learn_nights: int = Field(default=3, ge=1, description="Nights learned before MNF_RISE can be judged.")
    drift_margin_m: float = Field(
        default=0.5,
        ge=0,
        description="SENSOR_DRIFT: margin kept above the low levels (and the fire-reserve stop) on an estimated level.",
    )
    tank_target_prefill_m: float = Field(default=7.0, description="TARIFF_PEAK_AHEAD: peak near, tank below this.")
    eff_degraded_ratio: float = Field(
        default=1.15, gt=1, description="EFF_DEGRADED: a pump's kWh/m³ running alone above the twin's × this."
    )
    eff_window_s: float = Field(
        default=1800.0, gt=0, description="Running alone this long before a pump is judged (its average's span)."
    )
    eff_settle_s: float = Field(default=120.0, ge=0, description="After a start, not judged for this long.")


class ValidationSettings(StrictModel):
    """Monitor's checks on readings before anything acts on them."""

    max_rate_per_s: dict[str, float] = Field(
        default_factory=lambda: {"LIT-201": 0.05, "LIT-101": 0.05},
        description="Spike limit: largest credible change per second, by tag.",
    )
    flatline_s: dict[str, float] = Field(
        default_factory=lambda: {"LIT-201": 600.0, "LIT-101": 1800.0},
        description="A value that does not move at all for this long while its neighbours do is suspect.",
    )
    twin_residual_m: float = Field(
        default=0.3, gt=0, description="A tank level off the tank model by more than this is suspect (SENSOR_SUSPECT)."
    )
    spike_confirm: int = Field(default=3, ge=1, description="Consecutive agreeing readings that confirm a real jump.")


class LoopSettings(StrictModel):
    """The MAPE-K control loop."""

    enabled: bool = True
    mode: Literal["auto", "local", "maintenance"] = Field(
        default="auto", description="auto: the gateway controls; local: the PLC does; maintenance: no writes."
    )
    cycle_s: PositiveSeconds = Field(default=1.0, description="Analyze/Plan/Execute period.")
    heartbeat_tag: TagRef | None = "GW-HB"
    control_word_tag: TagRef | None = "HS-CTRL"
    in_control_tag: TagRef | None = Field(default="YS-GWCTRL", description="The PLC's 'under gateway control' bit.")
    alarm_reset_tag: TagRef | None = Field(default="XS-ALMRST", description="Momentary alarm reset (ack_alarm).")
    recover_s: float = Field(default=30.0, ge=0, description="Inputs good this long before control is retaken.")
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
    strategy: Literal["schedule", "hysteresis"] = Field(
        default="schedule", description="schedule: tariff-aware look-ahead; hysteresis: lead/lag at start/stop levels."
    )
    twin: TwinSettings = Field(default_factory=TwinSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    symptoms: SymptomSettings = Field(default_factory=SymptomSettings)
    decision_history: int = Field(default=50, ge=1, description="Decisions kept in memory for status views.")
    command_timeout_s: PositiveSeconds = Field(default=5.0, description="Longest an Execute write may take.")
