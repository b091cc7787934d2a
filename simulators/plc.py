"""The pump-station PLC: what it accepts from the gateway, its own level control, its interlocks and counters.

Behaviour (the contract the gateway is written against; see also ``docs/simulators.md``):

- Hand-Off-Auto per pump (operator panel) and a Remote-enable switch. ``HS-10x`` = Auto and Remote.
- Gateway control = ``HS-CTRL`` bit 0 set **and** ``GW-HB`` changed within ``heartbeat_timeout_s``. Under gateway
  control a pump in Auto+Remote runs exactly when its run request ``XC-10x`` is 1. Otherwise (no request for
  control, or the heartbeat went stale: ``XA-HBSTALE``) the PLC runs its own hysteresis control on ``LIT-201``
  with ``LIC-201.START_LEAD``/``START_LAG``/``STOP`` and duty pump ``HS-DUTY``; the hand-over is bumpless (the
  pumps that run keep running until the hysteresis says otherwise). Pumps in Auto without Remote always follow the
  local control; Hand runs, Off stops.
- Interlocks act in every mode: dry run (``LIT-101`` < 0.8 m stops all pumps until it is back above 1.0 m,
  ``XA-DRYRUN``) and high-high (float ``LSHH-201`` or ``LIT-201`` ≥ 7.8 m stops filling until below 7.5 m,
  ``XA-HIHI``). A maintained run request resumes once the interlock clears.
- A pump fault ``YA-10x`` latches until ``XS-ALMRST`` (momentary: the PLC clears the coil after acting); a reset
  is refused while the cause persists. A faulted pump does not run, in any mode.
- Run hours, starts and starts in the last rolling hour count from the motor contactor; ``HB-PLC`` counts PLC
  seconds. Counters are retentive over a PLC restart; the command memory returns to its power-on values.
- Writes out of range are refused (Modbus exception 03, OPC UA ``BadOutOfRange``) and leave the memory unchanged.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from simulators.config import PUMPS, PlantConfig
from simulators.plant import LPS, Plant, Pump
from simulators.sensors import Sensors

Value = float | int | bool


class WriteRejected(ValueError):
    """The PLC refused a write: value out of the range it accepts, or the signal is read-only."""


class Hoa(StrEnum):
    """Hand-Off-Auto selector on the pump's local panel."""

    HAND = "hand"
    OFF = "off"
    AUTO = "auto"


@dataclass(slots=True)
class Panel:
    """The pump's local panel and its fault latch in the PLC."""

    hoa: Hoa = Hoa.AUTO
    remote: bool = True
    fault: bool = False
    trip_cause: bool = False


# Writable memory: name → (low, high) the PLC accepts. Bools accept 0/1.
_LIMITS: dict[str, tuple[float, float]] = {
    "LIC-201.START_LEAD": (0.0, 8.0),
    "LIC-201.START_LAG": (0.0, 8.0),
    "LIC-201.STOP": (0.0, 8.0),
    "HS-DUTY": (1, 3),
    "SIC-101": (0.0, 100.0),
    "PCV-301.SP": (35.0, 55.0),
    "FIC-100": (0.0, 60.0),
    "HS-CTRL": (0, 65535),
    "GW-HB": (0, 65535),
}
_INTEGER = frozenset({"HS-DUTY", "HS-CTRL", "GW-HB"})
_COILS = frozenset({"XC-101", "XC-102", "XC-103", "XS-ALMRST"})
WRITABLE = frozenset(_LIMITS) | _COILS


class Plc:
    """Scans once per step after the plant and the sensors; ``image()`` is what its servers publish."""

    def __init__(self, cfg: PlantConfig, plant: Plant, sensors: Sensors) -> None:
        self.cfg = cfg
        self.plant = plant
        self.sensors = sensors
        self.panels = [Panel() for _ in PUMPS]
        self.powered = True
        self.hb = 0
        self._hb_acc = 0.0
        self._stage = 0
        self.dry_run = False
        self.high_high = False
        self.gateway_control = False
        self.heartbeat_stale = False
        self._trend_filter: float | None = None
        self._trend_samples: deque[float] = deque()
        self._trend_next = 0.0
        self.trend_m_h = 0.0
        self.memory: dict[str, Value] = {}
        self._hb_changed_at: float | None = None
        self.power_on()

    # --- memory -------------------------------------------------------------------------------------------------

    def power_on(self) -> None:
        """Start scanning with the command memory at its power-on values (counters are retentive)."""
        c = self.cfg
        self.memory = {
            "XC-101": False,
            "XC-102": False,
            "XC-103": False,
            "XS-ALMRST": False,
            "LIC-201.START_LEAD": c.plc.start_lead_m,
            "LIC-201.START_LAG": c.plc.start_lag_m,
            "LIC-201.STOP": c.plc.stop_m,
            "HS-DUTY": c.plc.duty_pump,
            "SIC-101": c.plc.speed_setpoint_pct,
            "PCV-301.SP": c.prv.setpoint_m,
            "FIC-100": c.treatment.flow_setpoint_lps,
            "HS-CTRL": 0,
            "GW-HB": 0,
        }
        self._hb_changed_at = None
        self._stage = 0  # the hysteresis state is not retentive
        self.gateway_control = False
        self.heartbeat_stale = False
        self.powered = True
        self._apply_setpoints()

    def power_off(self) -> None:
        """The PLC stops scanning: its outputs drop, so pumps in Auto stop (Hand is hard-wired and keeps running)."""
        self.powered = False
        for pump, panel in zip(self.plant.pumps, self.panels, strict=True):
            self._set_running(pump, panel.hoa is Hoa.HAND and not panel.fault)

    def write(self, signal: str, value: Value) -> Value:
        """Apply a write from the gateway (Modbus or OPC UA); return the value the PLC now holds."""
        if signal not in WRITABLE:
            raise WriteRejected(f"{signal} is read-only")
        if signal in _COILS:
            stored: Value = bool(value)
        else:
            low, high = _LIMITS[signal]
            number = float(value)
            if not math.isfinite(number) or not low <= number <= high:
                raise WriteRejected(f"{signal}={value} outside {low:g}..{high:g}")
            stored = round(number) if signal in _INTEGER else number
        if signal == "GW-HB" and stored != self.memory["GW-HB"]:
            self._hb_changed_at = self.plant.t
        self.memory[signal] = stored
        self._apply_setpoints()
        return stored

    def _apply_setpoints(self) -> None:
        m = self.memory
        self.plant.wtp_setpoint = float(m["FIC-100"]) / LPS
        self.plant.prv_setpoint = float(m["PCV-301.SP"])
        speed = max(float(m["SIC-101"]), self.cfg.plc.vfd_min_pct) / 100.0
        for pump in self.plant.pumps:
            pump.speed_target = speed if pump.has_vfd else 1.0

    # --- operator actions ---------------------------------------------------------------------------------------

    def set_hoa(self, pump: int, hoa: Hoa) -> None:
        self.panels[pump].hoa = hoa

    def set_remote(self, pump: int, enabled: bool) -> None:
        self.panels[pump].remote = enabled

    def trip(self, pump: int, *, persistent: bool) -> None:
        """A motor protection trip: the pump stops and ``YA`` latches."""
        panel = self.panels[pump]
        panel.fault = True
        panel.trip_cause = persistent
        self._set_running(self.plant.pumps[pump], False)

    def clear_trip_cause(self, pump: int) -> None:
        self.panels[pump].trip_cause = False

    # --- the scan -----------------------------------------------------------------------------------------------

    def scan(self, dt: float) -> None:
        """One PLC scan of ``dt`` simulated seconds, on the sensor values sampled after the last plant step."""
        if not self.powered:
            return
        self._heartbeat(dt)
        if self.memory["XS-ALMRST"]:
            for panel in self.panels:
                panel.fault = panel.fault and panel.trip_cause
            self.memory["XS-ALMRST"] = False
        values = self.sensors.values
        self._interlocks(values["LIT-101"], values["LIT-201"])
        self._supervise_gateway()
        self._local_control(values["LIT-201"])
        self._drive_pumps()
        self._trend(values["LIT-201"], dt)

    def _heartbeat(self, dt: float) -> None:
        self._hb_acc += dt
        while self._hb_acc >= 1.0:
            self._hb_acc -= 1.0
            self.hb = (self.hb + 1) & 0xFFFF

    def _interlocks(self, cw_level: float, tank_level: float) -> None:
        p = self.cfg.plc
        if self.dry_run:
            self.dry_run = cw_level <= p.dry_run_reset_m
        else:
            self.dry_run = cw_level < p.dry_run_trip_m
        high = self.float_switch or tank_level >= p.high_high_m
        if self.high_high:
            self.high_high = high or tank_level >= p.high_high_reset_m
        else:
            self.high_high = high

    @property
    def float_switch(self) -> bool:
        """LSHH-201: a float on the true water surface, independent of the level transmitter."""
        return self.plant.tank_level >= self.cfg.plc.high_high_m

    def _supervise_gateway(self) -> None:
        requested = bool(int(self.memory["HS-CTRL"]) & 1)
        changed = self._hb_changed_at
        stale = changed is None or self.plant.t - changed > self.cfg.plc.heartbeat_timeout_s
        was = self.gateway_control
        self.gateway_control = requested and not stale
        self.heartbeat_stale = requested and stale
        if was and not self.gateway_control:
            # Bumpless: local control starts from the pumps in Auto that are running now.
            auto = [p.running for p, panel in zip(self.plant.pumps, self.panels, strict=True) if panel.hoa is Hoa.AUTO]
            self._stage = min(2, sum(auto))

    def _local_control(self, level: float) -> None:
        m = self.memory
        before = self._stage
        if level >= float(m["LIC-201.STOP"]):
            self._stage = 0
        elif level < float(m["LIC-201.START_LAG"]):
            self._stage = 2
        elif level < float(m["LIC-201.START_LEAD"]):
            self._stage = max(self._stage, 1)
        if before == 0 and self._stage > 0 and self.cfg.plc.duty_rotation == "run_hours":
            eligible = [i for i in range(len(PUMPS)) if self._local(i)]
            if eligible:
                m["HS-DUTY"] = 1 + min(eligible, key=lambda i: self.plant.pumps[i].run_s)

    def _local(self, i: int) -> bool:
        """Pump ``i`` is in the local controller's hands."""
        panel = self.panels[i]
        if panel.hoa is not Hoa.AUTO or panel.fault:
            return False
        return not (panel.remote and self.gateway_control)

    def _local_assignment(self) -> list[bool]:
        if self._stage == 0:
            return [False] * len(PUMPS)
        duty = int(self.memory["HS-DUTY"]) - 1
        pumps = self.plant.pumps
        # Duty order, but pumps already running first: taking over from the gateway must not swap pumps.
        order = sorted(range(len(PUMPS)), key=lambda i: (not pumps[i].running, (i - duty) % len(PUMPS)))
        chosen = [i for i in order if self._local(i)][: self._stage]
        return [i in chosen for i in range(len(PUMPS))]

    def _drive_pumps(self) -> None:
        local = self._local_assignment()
        blocked = self.dry_run or self.high_high
        for i, (pump, panel) in enumerate(zip(self.plant.pumps, self.panels, strict=True)):
            if panel.fault or blocked or panel.hoa is Hoa.OFF:
                run = False
            elif panel.hoa is Hoa.HAND:
                run = True
            elif panel.remote and self.gateway_control:
                run = bool(self.memory[f"XC-{101 + i}"])
            else:
                run = local[i]
            self._set_running(pump, run)

    def _set_running(self, pump: Pump, run: bool) -> None:
        if run and not pump.running:
            pump.starts += 1
            pump.start_times.append(self.plant.t)
        pump.running = run

    def _trend(self, level: float, dt: float) -> None:
        """LI-201.TREND in m/h: the change of a 60 s-filtered level over the trend window."""
        lf = self._trend_filter
        self._trend_filter = level if lf is None else lf + (level - lf) * min(1.0, dt / 60.0)
        if self.plant.t < self._trend_next:
            return
        self._trend_next = self.plant.t + 10.0
        window = self.cfg.plc.trend_window_s
        samples = self._trend_samples
        samples.append(self._trend_filter)
        while len(samples) > max(2, int(window / 10.0) + 1):
            samples.popleft()
        if len(samples) >= 2:
            self.trend_m_h = (samples[-1] - samples[0]) / (10.0 * (len(samples) - 1)) * 3600.0

    # --- the published image ------------------------------------------------------------------------------------

    def available(self, i: int) -> bool:
        """YL: not faulted and not switched Off."""
        panel = self.panels[i]
        return not panel.fault and panel.hoa is not Hoa.OFF

    def image(self) -> dict[str, Value]:
        """Every signal the PLC serves, by name, in engineering units (the servers encode them)."""
        self.sensors.sample_display(self.plant)
        out: dict[str, Value] = dict(self.memory)
        out.update(self.sensors.values)
        t = self.plant.t
        for i, (pump, panel) in enumerate(zip(self.plant.pumps, self.panels, strict=True)):
            n = 101 + i
            out[f"YS-{n}"] = pump.running
            out[f"YA-{n}"] = panel.fault
            out[f"YL-{n}"] = self.available(i)
            out[f"HS-{n}"] = panel.hoa is Hoa.AUTO and panel.remote
            out[f"RH-{n}"] = pump.run_s / 3600.0
            out[f"ST-{n}"] = pump.starts
            out[f"SH-{n}"] = pump.starts_last_hour(t)
        values = self.sensors.values
        out["LSHH-201"] = self.float_switch
        out["YS-GWCTRL"] = self.gateway_control
        out["HB-PLC"] = self.hb
        out["LI-201.TREND"] = self.trend_m_h
        out["XA-DRYRUN"] = self.dry_run
        out["XA-HIHI"] = self.high_high
        out["XA-HBSTALE"] = self.heartbeat_stale
        out["XA-WTPOUT"] = self.plant.disturbances.wtp_outage
        out["FI-201"] = values["FIT-110"] - values["FIT-301"]
        out["EQI-110"] = self.plant.energy_kwh
        out["FQI-110"] = self.plant.station_m3
        out["FQI-301"] = self.plant.zone_m3
        return out
