"""The simulator's configuration (``config/plant.toml``): plant parameters, PLC settings, servers and run options.

Every default is the reference plant of ``docs/plant.md``, so ``PlantConfig()`` is the bundled plant. The file is
validated strictly, in the style of ``gateway.config``: unknown keys are errors and every problem carries the dotted
path of its field (``tank.diameter_m``). Relative paths (point map, scenario, CSV) are taken from the file's directory.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

from gateway.config.common import BASE_DIR, ConfigPath, ListenPort, StrictModel
from gateway.config.pointmap import format_loc
from gateway.domain.errors import ConfigError
from gateway.paths import bundled_config_dir

PUMPS = ("P-101", "P-102", "P-103")

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]

_DEMAND: tuple[float, ...] = (0.45, 0.40, 0.35, 0.35, 0.40, 0.60, 1.05, 1.55, 1.60, 1.35, 1.15, 1.10)
_DEMAND += (1.15, 1.10, 1.00, 0.95, 1.05, 1.30, 1.50, 1.55, 1.35, 1.10, 0.80, 0.60)
# Off-peak 22-07 h, shoulder, peak 17-21 h (docs/plant.md).
_TARIFF = (0.08,) * 7 + (0.15,) * 10 + (0.30,) * 4 + (0.15,) + (0.08,) * 2


def default_plant_file() -> Path:
    """The bundled ``plant.toml`` (next to the point map)."""
    return bundled_config_dir() / "plant.toml"


def default_point_map_file() -> Path:
    """The shared point map next to the bundled configuration."""
    return bundled_config_dir() / "booster_station.points.toml"


class SimulationSettings(StrictModel):
    """How the simulation runs: seed, time step, speed, local time, scenario and recording."""

    seed: int = Field(default=42, description="Seed of every random stream (demand, sensor noise, spikes).")
    dt_s: float = Field(default=1.0, gt=0, le=10, description="Physics and PLC scan step, simulated seconds.")
    speed: Positive = Field(default=1.0, description="Simulated seconds per real second (standalone command).")
    start: AwareDatetime | None = Field(
        default=None,
        description="Start time (ISO 8601 with zone) of a scaled run; default: now (stepped: the clock's).",
    )
    utc_offset_h: float = Field(default=0.0, ge=-14, le=14, description="Local time = UTC + offset (demand, tariff).")
    scenario: ConfigPath | None = Field(default=None, description="Scenario file of timed faults (TOML).")
    record_csv: ConfigPath | None = Field(default=None, description="Write the true plant state to this CSV file.")
    record_interval_s: Positive = Field(default=60.0, description="Simulated seconds between CSV rows.")
    log_interval_s: Positive = Field(default=60.0, description="Real seconds between plant-state log lines.")


class ModbusServerSettings(StrictModel):
    """The Modbus TCP listener of the simulated PLC."""

    enabled: bool = True
    port: ListenPort = Field(default=5020, description="0 = pick a free port and print it.")
    unit_id: int = Field(default=1, ge=0, le=247)


class OpcUaServerSettings(StrictModel):
    """The OPC UA server: endpoint ``opc.tcp://<host>:<port><path>``."""

    enabled: bool = True
    port: ListenPort = Field(default=4840, description="0 = pick a free port and print it.")
    path: str = Field(default="/bs01", pattern=r"^/[A-Za-z0-9_./-]*$")


class ControlSettings(StrictModel):
    """The control port of ``gateway-sim`` (see ``simulators.control``)."""

    enabled: bool = True
    port: ListenPort = Field(default=5021, description="Line-based control port on the host; 0 = free port.")


class ServerSettings(StrictModel):
    """The simulated PLCs' network side."""

    host: str = Field(default="127.0.0.1", min_length=1)
    point_map: ConfigPath = Field(default_factory=default_point_map_file)
    modbus: ModbusServerSettings = Field(default_factory=ModbusServerSettings)
    opcua: OpcUaServerSettings = Field(default_factory=OpcUaServerSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)


class PlcSettings(StrictModel):
    """The pump-station PLC: local level control, interlocks, gateway heartbeat supervision (power-on values)."""

    heartbeat_timeout_s: Positive = Field(default=30.0, description="GW-HB unchanged this long = stale.")
    start_lead_m: NonNegative = 4.0
    start_lag_m: NonNegative = 3.0
    stop_m: NonNegative = 7.0
    duty_pump: int = Field(default=1, ge=1, le=3, description="HS-DUTY at power-on: the lead pump's number.")
    duty_rotation: Literal["fixed", "run_hours"] = Field(
        default="fixed", description="run_hours: at each lead start the PLC makes the pump with fewest hours duty."
    )
    dry_run_trip_m: NonNegative = 0.8
    dry_run_reset_m: NonNegative = 1.0
    high_high_m: NonNegative = 7.8
    high_high_reset_m: NonNegative = 7.5
    vfd_min_pct: float = Field(default=30.0, ge=0, le=100)
    vfd_ramp_pct_s: Positive = Field(default=10.0, description="VFD acceleration, % per second.")
    speed_setpoint_pct: float = Field(default=100.0, ge=0, le=100)
    trend_window_s: Positive = Field(default=300.0, description="Time constant of the LI-201.TREND filter.")

    @model_validator(mode="after")
    def _bands(self) -> PlcSettings:
        if not self.start_lag_m < self.start_lead_m < self.stop_m:
            raise ValueError("levels must satisfy start_lag_m < start_lead_m < stop_m")
        if not self.dry_run_trip_m < self.dry_run_reset_m:
            raise ValueError("dry_run_trip_m must be below dry_run_reset_m")
        if not self.high_high_reset_m < self.high_high_m:
            raise ValueError("high_high_reset_m must be below high_high_m")
        return self


class TreatmentSettings(StrictModel):
    """Treatment plant: FIC-100 at power-on, the lag of FIT-100, the chlorine dose."""

    flow_setpoint_lps: float = Field(default=26.5, ge=0, le=60)
    lag_s: Positive = Field(default=300.0, description="First-order time constant of FIT-100 following FIC-100.")
    chlorine_dose_mg_l: NonNegative = 1.0


class ReservoirSettings(StrictModel):
    """A cylindrical store (clearwell, tank): size, floor elevation, start and overflow levels."""

    diameter_m: Positive
    floor_m: float
    initial_level_m: NonNegative
    max_level_m: Positive = Field(description="Overflow level.")

    @property
    def area_m2(self) -> float:
        return math.pi * self.diameter_m**2 / 4

    @model_validator(mode="after")
    def _initial_below_overflow(self) -> ReservoirSettings:
        if self.initial_level_m > self.max_level_m:
            raise ValueError("initial_level_m is above max_level_m")
        return self


def _clearwell() -> ReservoirSettings:
    return ReservoirSettings(diameter_m=18.0, floor_m=100.0, initial_level_m=2.5, max_level_m=5.0)


def _tank() -> ReservoirSettings:
    return ReservoirSettings(diameter_m=12.0, floor_m=140.0, initial_level_m=5.0, max_level_m=8.0)


class PumpSettings(StrictModel):
    """Three identical pumps in parallel; H = s²·H0 − k·(Q/n)², η = η_max·(1 − ((Q − Q_bep)/Q_bep)²)."""

    shutoff_head_m: Positive = 65.0
    k_m_per_m3s2: Positive = Field(default=12245.0, description="Curve coefficient k (rated 35 L/s at 50 m).")
    bep_flow_lps: Positive = 35.0
    eta_max: float = Field(default=0.78, gt=0, le=1)
    eta_motor: float = Field(default=0.93, gt=0, le=1)
    eta_vfd: float = Field(default=0.97, gt=0, le=1)
    motor_kw: Positive = 30.0
    shutoff_power_fraction: float = Field(default=0.35, ge=0, le=1, description="Power at no flow, × motor_kw × s³.")
    vfd_pump: Literal["P-101", "P-102", "P-103"] = "P-101"


class MainSettings(StrictModel):
    """The rising main from the station to the tank."""

    k_m_per_m3s2: Positive = Field(default=1778.0, description="Rising-main friction K in Hs = lift + K·Q².")


class ZoneSettings(StrictModel):
    """Demand zone DMA-1: demand pattern and noise, elevation, zone main friction."""

    mean_demand_lps: NonNegative = 25.0
    multipliers: tuple[float, ...] = Field(default=_DEMAND, description="Hourly demand multipliers, hours 0-23.")
    noise: NonNegative = Field(default=0.05, description="Standard deviation of the AR(1) demand noise (fraction).")
    noise_correlation_min: Positive = Field(default=20.0, description="Correlation time of the noise, minutes.")
    elevation_m: float = 95.0
    kd_m_per_m3s2: NonNegative = Field(default=3000.0, description="Zone main friction K_d.")

    @field_validator("multipliers")
    @classmethod
    def _hourly(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if len(v) != 24 or min(v) < 0:
            raise ValueError("multipliers needs 24 non-negative values (hours 0-23)")
        return v


class PrvSettings(StrictModel):
    """PRV PCV-301: setpoint at power-on and the smallest drop across it."""

    setpoint_m: float = Field(default=45.0, ge=35, le=55)
    min_drop_m: NonNegative = 0.5


class LeakageSettings(StrictModel):
    """Background leakage Q = C·p^exponent, given as the flow at a reference pressure."""

    flow_at_ref_lps: NonNegative = 1.5
    ref_pressure_m: Positive = 45.0
    exponent: NonNegative = 1.0


class ChlorineSettings(StrictModel):
    """Bulk decay in the stores and their starting concentration."""

    decay_per_day: NonNegative = 0.5
    initial_mg_l: NonNegative = 1.0


class TariffSettings(StrictModel):
    """Energy price by local hour."""

    eur_per_kwh: tuple[float, ...] = Field(default=_TARIFF, description="Energy price by local hour, 0-23.")

    @field_validator("eur_per_kwh")
    @classmethod
    def _hourly(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if len(v) != 24 or min(v) < 0:
            raise ValueError("eur_per_kwh needs 24 non-negative prices (hours 0-23)")
        return v

    @property
    def average(self) -> float:
        """Time-weighted average price, the value of stored water in the scorecard."""
        return sum(self.eur_per_kwh) / 24


class SensorSettings(StrictModel):
    """Noise of the instruments (one standard deviation)."""

    enabled: bool = True
    level_m: NonNegative = 0.005
    flow_fraction: NonNegative = 0.005
    pressure_fraction_of_span: NonNegative = 0.0025
    chlorine_mg_l: NonNegative = 0.03
    power_fraction: NonNegative = 0.01


class PlantConfig(StrictModel):
    """Root of ``plant.toml``; the defaults are the reference plant."""

    simulation: SimulationSettings = Field(default_factory=SimulationSettings)
    servers: ServerSettings = Field(default_factory=ServerSettings)
    plc: PlcSettings = Field(default_factory=PlcSettings)
    treatment: TreatmentSettings = Field(default_factory=TreatmentSettings)
    clearwell: ReservoirSettings = Field(default_factory=_clearwell)
    pumps: PumpSettings = Field(default_factory=PumpSettings)
    main: MainSettings = Field(default_factory=MainSettings)
    tank: ReservoirSettings = Field(default_factory=_tank)
    zone: ZoneSettings = Field(default_factory=ZoneSettings)
    prv: PrvSettings = Field(default_factory=PrvSettings)
    leakage: LeakageSettings = Field(default_factory=LeakageSettings)
    chlorine: ChlorineSettings = Field(default_factory=ChlorineSettings)
    tariff: TariffSettings = Field(default_factory=TariffSettings)
    sensors: SensorSettings = Field(default_factory=SensorSettings)

    def with_overrides(self, **sections: dict[str, object]) -> PlantConfig:
        """A copy with some fields of some sections replaced, validated: ``cfg.with_overrides(tank={...})``."""
        data = self.model_dump()
        for name, fields in sections.items():
            data[name] = {**data[name], **fields}
        return PlantConfig.model_validate(data)


def load_plant_config(path: str | Path | None = None) -> PlantConfig:
    """Load and validate ``plant.toml`` (the bundled one when ``path`` is None); raise ``ConfigError`` listing all."""
    path = Path(path).expanduser().resolve() if path is not None else default_plant_file()
    data = read_toml(path, "plant configuration")
    token = BASE_DIR.set(path.parent)
    try:
        return PlantConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems(exc), source=str(path)) from exc
    finally:
        BASE_DIR.reset(token)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's content; ``ConfigError`` when it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([("", f"cannot read {what}: {exc.strerror}")], source=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], source=str(path)) from exc


def problems(exc: ValidationError, *, skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(dotted path, message) of each validation error; ``skip`` drops union tags from the paths."""
    out = []
    for e in exc.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in skip))
        msg = "unknown setting (check the spelling)" if e["type"] == "extra_forbidden" else str(e["msg"])
        out.append((format_loc(loc), msg))
    return out
