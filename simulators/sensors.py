"""The plant's analog instruments: the true value plus noise, and the sensor faults of ``docs/plant.md``.

A broken loop (0 mA on a 4-20 mA loop) reads 25 % of the span below the range, as a PLC's analog card reports it;
the PLC acts on that value like a real one would, and the OPC UA server marks the node ``BadSensorFailure``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from simulators.config import SensorSettings
from simulators.plant import LPS, Plant

UNDER_RANGE_FRACTION = 0.25


@dataclass(frozen=True, slots=True)
class Instrument:
    """One transmitter: which plant value it reads, its span, and its noise model."""

    name: str
    low: float
    high: float
    read: Callable[[Plant], float]
    noise: str  # level | flow | pressure | chlorine | power | none

    @property
    def span(self) -> float:
        return self.high - self.low

    @property
    def under_range(self) -> float:
        return self.low - UNDER_RANGE_FRACTION * self.span


def _pump_power(i: int) -> Callable[[Plant], float]:
    return lambda p: p.pumps[i].power_kw


def _vfd_speed(p: Plant) -> float:
    return next((pu.speed * 100.0 for pu in p.pumps if pu.has_vfd), 0.0)


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("LIT-101", 0.0, 5.0, lambda p: p.cw_level, "level"),
    Instrument("LIT-201", 0.0, 8.0, lambda p: p.tank_level, "level"),
    Instrument("FIT-100", 0.0, 60.0, lambda p: p.wtp_flow * LPS, "flow"),
    Instrument("FIT-110", 0.0, 150.0, lambda p: p.station_flow * LPS, "flow"),
    Instrument("PIT-110", 0.0, 100.0, lambda p: p.discharge_head, "pressure"),
    Instrument("FIT-301", 0.0, 150.0, lambda p: p.zone_flow * LPS, "flow"),
    Instrument("PIT-301", 0.0, 100.0, lambda p: p.p_out, "pressure"),
    Instrument("AIT-100", 0.0, 5.0, lambda p: p.cl_plant, "chlorine"),
    Instrument("AIT-301", 0.0, 5.0, lambda p: p.cl_tank, "chlorine"),
    Instrument("JI-101", 0.0, 60.0, _pump_power(0), "power"),
    Instrument("JI-102", 0.0, 60.0, _pump_power(1), "power"),
    Instrument("JI-103", 0.0, 60.0, _pump_power(2), "power"),
    Instrument("SI-101", 0.0, 100.0, _vfd_speed, "none"),
)
BY_NAME = {i.name: i for i in INSTRUMENTS}


@dataclass(slots=True)
class SensorFault:
    """What is wrong with one instrument; several may act at once (a drifting transmitter can also spike)."""

    stuck_at: float | None = None
    drift_per_day: float = 0.0
    drift_since: float = 0.0
    spike_sigmas: float = 0.0
    spike_mean_interval_s: float = 300.0
    broken: bool = False


#: The instruments the PLC acts on every scan; the others are read only when someone looks (see ``Sensors``).
CONTROL = ("LIT-101", "LIT-201")


class Sensors:
    """The instruments' readings in ``values``; ``bad`` holds the names reading bad quality.

    The PLC's own instruments (``CONTROL``) are sampled every step from their own random stream, so the plant's
    trajectory is the same for a seed however often the servers publish. The others are sampled when the image is
    published (``sample_display``), which keeps a simulated day cheap; their noise depends on when they are read.
    """

    def __init__(self, settings: SensorSettings, *, seed: int) -> None:
        self.settings = settings
        self._control_rng = random.Random(f"noise:{seed}")
        self._display_rng = random.Random(f"display:{seed}")
        self._spikes = random.Random(f"spikes:{seed}")
        self.faults: dict[str, SensorFault] = {}
        self.values: dict[str, float] = {}
        self.bad: set[str] = set()
        self._last_read: dict[str, float] = {}
        self._display_t: float | None = None
        self._control = tuple(BY_NAME[n] for n in CONTROL)
        self._display = tuple(i for i in INSTRUMENTS if i.name not in CONTROL)
        self._sigma = {i.name: self._noise_model(i) for i in INSTRUMENTS}

    def sigma(self, inst: Instrument, value: float) -> float:
        """One standard deviation of the noise of ``inst`` at reading ``value``."""
        fixed, relative = self._sigma[inst.name]
        return fixed + relative * abs(value)

    def _noise_model(self, inst: Instrument) -> tuple[float, float]:
        """(fixed σ, σ as a fraction of the reading) of an instrument."""
        s = self.settings
        if not s.enabled:
            return 0.0, 0.0
        fixed = {"level": s.level_m, "chlorine": s.chlorine_mg_l, "pressure": s.pressure_fraction_of_span * inst.span}
        relative = {"flow": s.flow_fraction, "power": s.power_fraction}
        return fixed.get(inst.noise, 0.0), relative.get(inst.noise, 0.0)

    def sample(self, plant: Plant, dt: float) -> None:
        """Read the PLC's instruments (call once per step, after the physics)."""
        gauss = self._control_rng.gauss
        for inst in self._control:
            self._read(inst, plant, gauss)

    def sample_display(self, plant: Plant) -> None:
        """Read every other instrument, once per simulated instant."""
        if self._display_t == plant.t:
            return
        self._display_t = plant.t
        gauss = self._display_rng.gauss
        for inst in self._display:
            self._read(inst, plant, gauss)

    def _read(self, inst: Instrument, plant: Plant, gauss: Callable[[float, float], float]) -> None:
        true = inst.read(plant)
        sigma = self.sigma(inst, true)
        value = true + gauss(0.0, sigma) if sigma > 0.0 else true
        fault = self.faults.get(inst.name)
        if fault is not None:
            value = self._faulty(inst, value, sigma, fault, plant.t)
        self.values[inst.name] = value

    def _faulty(self, inst: Instrument, value: float, sigma: float, fault: SensorFault, t: float) -> float:
        if fault.broken:
            self.bad.add(inst.name)
            return inst.under_range
        self.bad.discard(inst.name)
        if fault.stuck_at is not None:
            return fault.stuck_at
        value += fault.drift_per_day * (t - fault.drift_since) / 86400.0
        elapsed = t - self._last_read.get(inst.name, t - 1.0)
        self._last_read[inst.name] = t
        if fault.spike_sigmas and self._spikes.random() < elapsed / fault.spike_mean_interval_s:
            # At least 0.5 % of span, so that a spike on a flow of zero still shows.
            size = fault.spike_sigmas * max(sigma, 0.005 * inst.span)
            value += size if self._spikes.random() < 0.5 else -size
        return value

    def repair(self, name: str) -> None:
        """The instrument reads true again (plus its noise)."""
        self.faults.pop(name, None)
        self.bad.discard(name)
