"""Fakes of our own ports for the loop's unit tests: a small booster-station plant behind two ``FieldDevice`` fakes
(the PLC contract of docs/plant.md: run-request coils honoured only under gateway control with a fresh heartbeat,
local hysteresis otherwise, dry-run and high-high interlocks, latched faults).

The scenario tests use the real simulators over TCP; these fakes keep the unit and property tests fast and let them
inspect every write the loop made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from gateway.domain.errors import DeviceUnavailable
from gateway.domain.model import (
    DataType,
    OpcUaAddress,
    Quality,
    QualityReason,
    Reading,
    Tag,
    Value,
)
from gateway.domain.ports import WriteResult
from gateway.domain.twin import PlantModel, PumpCurve

PUMPS = ("P-101", "P-102", "P-103")
PLC_TAGS = (
    [f"XC-10{i}" for i in (1, 2, 3)]
    + [f"{p}-10{i}" for p in ("YS", "YA", "HS", "RH", "SH", "ST", "JI") for i in (1, 2, 3)]
    + ["YS-GWCTRL", "LIT-101", "FIT-100", "FIC-100", "FIT-110", "HS-CTRL", "GW-HB", "XA-HIHI", "XA-DRYRUN"]
    + ["LIC-201.START_LEAD", "LIC-201.START_LAG", "LIC-201.STOP"]
)
RTU_TAGS = ["LIT-201", "LSHH-201", "FIT-301", "PIT-301", "PCV-301.SP", "AIT-100", "AIT-301"]
VFD_TAG = "SIC-101"  # P-101's speed set point: polled only by devices given it (``tests/loop/test_speed.py``)
WRITABLE = {"XC-101", "XC-102", "XC-103", "HS-CTRL", "GW-HB", "FIC-100", "PCV-301.SP", VFD_TAG, *PLC_TAGS[-3:]}
BOOLS = {t for t in PLC_TAGS + RTU_TAGS if t.split("-")[0] in {"XC", "YS", "YA", "HS", "LSHH", "XA"}} - {"HS-CTRL"}
MULT = [.45, .40, .35, .35, .40, .60, 1.05, 1.55, 1.60, 1.35, 1.15, 1.10,
        1.15, 1.10, 1.00, .95, 1.05, 1.30, 1.50, 1.55, 1.35, 1.10, .80, .60]  # fmt: skip


@dataclass
class Write:
    at: float
    tag: str
    value: Value
    in_control: bool
    auto_remote: dict[str, bool]
    running: dict[str, bool]


@dataclass
class FakePlant:
    """A plant with the PLC contract; ``step(dt)`` advances physics and PLC logic."""

    now: float = 1_767_225_600.0
    tank: float = 5.0
    clearwell: float = 2.5
    running: list[bool] = field(default_factory=lambda: [False, False, False])
    fault: list[bool] = field(default_factory=lambda: [False, False, False])
    auto_remote: list[bool] = field(default_factory=lambda: [True, True, True])
    coils: list[bool] = field(default_factory=lambda: [False, False, False])
    run_hours: list[float] = field(default_factory=lambda: [120.0, 110.0, 130.0])
    starts: list[list[float]] = field(default_factory=lambda: [[], [], []])
    control_word: int = 0
    heartbeat: int = 0
    heartbeat_at: float = -1e9
    heartbeat_timeout_s: float = 30.0
    fic: float = 26.5
    prv: float = 45.0
    levels: dict[str, float] = field(
        default_factory=lambda: {"LIC-201.START_LEAD": 4.0, "LIC-201.START_LAG": 3.0, "LIC-201.STOP": 7.0}
    )  # the PLC's own hysteresis (local control)
    demand_scale: float = 1.0
    extra_outflow: float = 0.0
    fails_to_start: set[int] = field(default_factory=set)
    power_factor: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # > 1: a worn pump (JI-10x)
    level_offset: float = 0.0  # LIT-201 reads the tank plus this (a drifting transmitter)
    speed_pct: float = 100.0  # SIC-101, P-101's speed set point (the physics here ignore it)
    high_float: bool | None = None  # LSHH-201 stuck at this (None: the float follows the water)
    hihi: bool = False  # the PLC's high-high interlock (XA-HIHI), on its instruments: set at the float or 7.8 m
    dry_run: bool = False  # the PLC's dry-run interlock (XA-DRYRUN): set below 0.8 m, cleared above 1.0 m
    writes: list[Write] = field(default_factory=list)
    model: PlantModel = field(
        default_factory=lambda: PlantModel(
            curve=PumpCurve(),
            tank_area_m2=PlantModel.area(12),
            tank_floor_m=140,
            clearwell_area_m2=PlantModel.area(18),
            clearwell_floor_m=100,
        )
    )
    energy_kwh: float = 0.0
    pumped_m3: float = 0.0
    min_tank: float = 99.0
    max_tank: float = 0.0

    @property
    def gateway_control(self) -> bool:
        return bool(self.control_word & 1) and self.now - self.heartbeat_at <= self.heartbeat_timeout_s

    def demand(self) -> float:
        hour = int((self.now % 86400) // 3600)
        return 25.0 * MULT[hour] * self.demand_scale + self.extra_outflow

    def step(self, dt: float) -> None:
        self.now += dt
        self._plc()
        n = sum(1 for i, r in enumerate(self.running) if r and i not in self.fails_to_start)
        op = self.model.station(n, self.tank, self.clearwell)
        out = self.demand() + 1.5
        self.tank = min(8.0, max(0.0, self.tank + (op.flow_lps - out) / 1000 * dt / self.model.tank_area_m2))
        cw_rate = (self.fic - op.flow_lps) / 1000 / self.model.clearwell_area_m2
        self.clearwell = min(5.0, max(0.0, self.clearwell + cw_rate * dt))
        self.energy_kwh += op.power_kw * dt / 3600
        self.pumped_m3 += op.flow_lps / 1000 * dt
        self.min_tank, self.max_tank = min(self.min_tank, self.tank), max(self.max_tank, self.tank)
        for i, r in enumerate(self.running):
            if r:
                self.run_hours[i] += dt / 3600

    def _plc(self) -> None:
        level = self.tank + self.level_offset
        float_up = self.tank >= 7.8 if self.high_float is None else self.high_float
        self.hihi = float_up or level >= 7.8 or (self.hihi and level >= 7.5)
        self.dry_run = self.clearwell < 0.8 or (self.dry_run and self.clearwell <= 1.0)
        want = self._wanted()
        for i in range(3):
            ok = want[i] and not self.fault[i] and not self.dry_run and not self.hihi
            if ok and not self.running[i]:
                self.starts[i].append(self.now)
            self.running[i] = ok

    def _wanted(self) -> list[bool]:
        if self.gateway_control:
            return [self.coils[i] and self.auto_remote[i] for i in range(3)]
        want = list(self.running)
        order = sorted(range(3), key=lambda i: self.run_hours[i])
        if self.tank < self.levels["LIC-201.START_LEAD"] and not any(want):
            want[order[0]] = True
        if self.tank < self.levels["LIC-201.START_LAG"] and sum(want) < 2:
            want[next(i for i in order if not want[i])] = True
        if self.tank > self.levels["LIC-201.STOP"]:
            want = [False, False, False]
        return [w and self.auto_remote[i] for i, w in enumerate(want)]

    def value(self, tag: str) -> Value:
        if tag.startswith(("XC-", "YS-1", "YA-", "HS-1", "RH-", "SH-", "ST-", "JI-")):
            i = int(tag[-1]) - 1
            return self._pump_value(tag[:2], i)
        n = sum(1 for i, r in enumerate(self.running) if r and i not in self.fails_to_start)
        op = self.model.station(n, self.tank, self.clearwell)
        table: dict[str, Value] = {
            "YS-GWCTRL": self.gateway_control,
            "LIT-101": round(self.clearwell, 3),
            "LIT-201": round(self.tank + self.level_offset, 3),
            "LSHH-201": self.tank >= 7.8 if self.high_float is None else self.high_float,
            "FIT-100": self.fic,
            "FIC-100": self.fic,
            "FIT-110": round(op.flow_lps, 2),
            "FIT-301": round(self.demand() + 1.5, 2),
            "PIT-301": self.prv,
            "PCV-301.SP": self.prv,
            "AIT-100": 1.0,
            "AIT-301": 0.8,
            "HS-CTRL": self.control_word,
            "GW-HB": self.heartbeat,
            "XA-HIHI": self.hihi,
            "XA-DRYRUN": self.dry_run,
            VFD_TAG: self.speed_pct,
            **self.levels,
        }
        return table[tag]

    def _pump_value(self, prefix: str, i: int) -> Value:
        if prefix == "XC":
            return self.coils[i]
        if prefix == "YS":
            return self.running[i]
        if prefix == "YA":
            return self.fault[i]
        if prefix == "HS":
            return self.auto_remote[i]
        if prefix == "RH":
            return round(self.run_hours[i], 2)
        if prefix == "SH":
            return sum(1 for t in self.starts[i] if self.now - t < 3600)
        if prefix == "ST":
            return len(self.starts[i])
        return 25.0 * self.power_factor[i] if self.running[i] else 0.0

    def write(self, tag: str, value: Value) -> None:
        auto = dict(zip(PUMPS, self.auto_remote, strict=True))
        running = dict(zip(PUMPS, self.running, strict=True))
        self.writes.append(Write(self.now, tag, value, self.gateway_control, auto, running))
        if tag.startswith("XC-"):
            self.coils[int(tag[-1]) - 1] = bool(value)
        elif tag == "HS-CTRL":
            self.control_word = int(value)
        elif tag == "GW-HB":
            if int(value) != self.heartbeat:
                self.heartbeat_at = self.now
            self.heartbeat = int(value)
        elif tag == "FIC-100":
            self.fic = float(value)
        elif tag == "PCV-301.SP":
            self.prv = float(value)
        elif tag in self.levels:
            self.levels[tag] = float(value)
        elif tag == VFD_TAG:
            self.speed_pct = float(value)
        self._plc()


class FakeDevice:
    """One device of the fake plant: polls its tags, writes with read-back; ``down`` makes it unreachable."""

    def __init__(self, name: str, plant: FakePlant, tags: Sequence[str]) -> None:
        self.name = name
        self.plant = plant
        self._tags = [
            Tag(t, name, OpcUaAddress(f"ns=2;s={t}"), DataType.BOOL if t in BOOLS else DataType.FLOAT64,
                writable=t in WRITABLE)
            for t in tags
        ]  # fmt: skip
        self.down = False
        self.stuck: dict[str, Value] = {}
        self.polls = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    @property
    def tags(self) -> Sequence[Tag]:
        return self._tags

    async def poll(self) -> list[Reading]:
        self.polls += 1
        now = self.plant.now
        if self.down:
            return [Reading(t.name, None, Quality.BAD, now, now, "", QualityReason.COMM_LOSS) for t in self._tags]
        return [
            Reading(t.name, self.stuck.get(t.name, self.plant.value(t.name)), Quality.GOOD, now, now)
            for t in self._tags
        ]

    async def write(self, tag: str, value: Value) -> WriteResult:
        if self.down:
            raise DeviceUnavailable(self.name, "timeout")
        self.plant.write(tag, value)
        back = self.plant.value(tag)
        ok = back == value or (isinstance(back, float) and math.isclose(back, float(value)))
        return WriteResult(tag, value, ok, back)
