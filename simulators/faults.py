"""Faults the simulators inject, as validated specs: the same vocabulary for scenario files, the Python API and the
control port (``inject burst flow_lps=8``).

Process faults act on the plant, its instruments or the PLC; communication faults act on the servers. Durations
(``duration_s``, ``down_s``) are simulated seconds, so a scenario means the same at any speed; ``delay_s`` of a slow
answer is real time, because it is measured against the client's real-time timeout.

A fault is active from its injection until it is cleared (``clear``) or its ``duration_s`` elapses. One-shot
faults (``pump_trip`` without a duration, ``modbus_disconnect``, ``opcua_disconnect``) act once and are not kept.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, TypeAdapter, field_validator

from gateway.config.common import StrictModel
from gateway.domain.model import ModbusTable
from simulators.sensors import BY_NAME

PumpName = Literal["P-101", "P-102", "P-103"]


def _instrument(name: str) -> str:
    if name not in BY_NAME:
        raise ValueError(f"unknown instrument {name!r}; one of {', '.join(BY_NAME)}")
    return name


class _Fault(StrictModel):
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,40}$", description="Id to clear it by.")
    duration_s: float | None = Field(default=None, gt=0, description="Clears itself after this many sim seconds.")


class _SensorFault(_Fault):
    signal: str

    @field_validator("signal")
    @classmethod
    def _known(cls, v: str) -> str:
        return _instrument(v)


# --- process faults -----------------------------------------------------------------------------------------------


class PumpTrip(_Fault):
    """Motor protection trips the pump; ``YA`` latches until alarm reset (refused while ``duration_s`` runs)."""

    kind: Literal["pump_trip"]
    pump: PumpName


class FailToStart(_Fault):
    """The pump runs (``YS`` = 1) but delivers no flow: broken coupling, closed valve."""

    kind: Literal["fail_to_start"]
    pump: PumpName


class PumpWear(_Fault):
    """A worn impeller or a motor fault: the pump delivers the same flow but takes ``1 / (1 - efficiency_loss)``
    times the power (0.2: +25 %)."""

    kind: Literal["pump_wear"]
    pump: PumpName
    efficiency_loss: float = Field(default=0.2, gt=0, lt=0.8)


class SensorStuck(_SensorFault):
    """The transmitter freezes at ``value`` (default: what it read at injection)."""

    kind: Literal["sensor_stuck"]
    value: float | None = None


class SensorDrift(_SensorFault):
    """The reading drifts away from the truth at ``rate_per_day`` units per day."""

    kind: Literal["sensor_drift"]
    rate_per_day: float = 0.5


class SensorSpike(_SensorFault):
    """Single-sample spikes of ``sigmas`` standard deviations, every ``mean_interval_s`` on average."""

    kind: Literal["sensor_spike"]
    sigmas: float = Field(default=15.0, gt=0)
    mean_interval_s: float = Field(default=300.0, gt=0)


class SensorBroken(_SensorFault):
    """Broken 4-20 mA loop: reads under range; bad quality on OPC UA."""

    kind: Literal["sensor_broken"]


class Burst(_Fault):
    """A main bursts in the zone: ``flow_lps`` extra outflow at 45 m, scaling with √pressure."""

    kind: Literal["burst"]
    flow_lps: float = Field(default=8.0, gt=0)


class IncipientLeak(_Fault):
    """A leak that grows linearly to ``final_lps`` (at 45 m) over ``ramp_h`` hours."""

    kind: Literal["incipient_leak"]
    final_lps: float = Field(default=3.0, gt=0)
    ramp_h: float = Field(default=24.0, gt=0)


class ValveStuck(_Fault):
    """PRV PCV-301 sticks in its present opening: the outlet follows the inlet instead of the setpoint."""

    kind: Literal["valve_stuck"]


class PrvFailedOpen(_Fault):
    """PRV PCV-301 fails wide open: zone pressure = inlet pressure − 0.5 m."""

    kind: Literal["prv_failed_open"]


class TreatmentOutage(_Fault):
    """The treatment plant stops sending water (FIT-100 falls to zero with the plant's lag); XA-WTPOUT."""

    kind: Literal["wtp_outage"]


class DosingFailure(_Fault):
    """Chlorine dosing fails: water leaves the plant at ``dose_mg_l`` (0 = no dosing; > 4 = overdose)."""

    kind: Literal["dosing_failure"]
    dose_mg_l: float = Field(default=0.0, ge=0)


class FireFlow(_Fault):
    """Fire fighting draws ``flow_lps`` from the zone for ``duration_s`` (2 h by default)."""

    kind: Literal["fire_flow"]
    flow_lps: float = Field(default=31.5, gt=0)
    duration_s: float | None = Field(default=7200.0, gt=0)


class ExtraDemand(_Fault):
    """Demand ``factor`` × forecast, within local hours [from_hour, to_hour) or all day."""

    kind: Literal["extra_demand"]
    factor: float = Field(default=1.15, gt=0)
    from_hour: float | None = Field(default=None, ge=0, lt=24)
    to_hour: float | None = Field(default=None, ge=0, le=24)


# --- communication faults -----------------------------------------------------------------------------------------


class _ModbusMatch(_Fault):
    """Which requests the fault hits: all by default; narrowed by server, unit, table, function code, address."""

    server: int | None = Field(default=None, ge=0, description="Index of the Modbus server; None = every server.")
    unit_id: int | None = Field(default=None, ge=0, le=255)
    table: ModbusTable | None = None
    function_code: int | None = Field(default=None, ge=1, le=127)
    start: int = Field(default=0, ge=0, le=65535)
    end: int = Field(default=65535, ge=0, le=65535, description="Last address hit (inclusive).")


class ModbusNoAnswer(_ModbusMatch):
    """Matching requests are silently dropped: the client times out."""

    kind: Literal["modbus_no_answer"]


class ModbusExceptionFault(_ModbusMatch):
    """Matching requests get exception ``code`` (01 function, 02 address, 03 value, 04 device failure, ...)."""

    kind: Literal["modbus_exception"]
    code: Literal[1, 2, 3, 4, 5, 6, 7, 8, 10, 11] = 4


class ModbusSlow(_ModbusMatch):
    """Matching requests are answered after ``delay_s`` real seconds."""

    kind: Literal["modbus_slow"]
    delay_s: float = Field(default=1.0, gt=0, le=600)


class ModbusDrop(_ModbusMatch):
    """A matching request closes the server's client connections without an answer (mid-request drop)."""

    kind: Literal["modbus_drop"]
    once: bool = Field(default=False, description="Clear the fault after the first drop.")


class ModbusDisconnect(_Fault):
    """Close every client connection of the Modbus servers now (one-shot)."""

    kind: Literal["modbus_disconnect"]


class PlcRestart(_Fault):
    """The PLC restarts: Modbus down for ``down_s``, memory back to power-on values, then the same port again."""

    kind: Literal["plc_restart"]
    down_s: float = Field(default=10.0, gt=0)


class OpcUaBadStatus(_Fault):
    """The chosen nodes (point names or node ids; none = all) read with status ``status`` and no value."""

    kind: Literal["opcua_bad_status"]
    status: str = Field(default="BadCommunicationError", pattern=r"^Bad[A-Za-z]+$")
    points: list[str] = Field(default_factory=list)


class OpcUaRestart(_Fault):
    """The OPC UA server goes down for ``down_s`` (connections dropped), then serves the same endpoint again."""

    kind: Literal["opcua_restart"]
    down_s: float = Field(default=10.0, gt=0)


class OpcUaDisconnect(_Fault):
    """Close every OPC UA client connection now (one-shot)."""

    kind: Literal["opcua_disconnect"]


class OpcUaClockOffset(_Fault):
    """The RTU's clock runs ``offset_s`` seconds off (positive: ahead): the values it stamps from now on, and its
    ServerStatus/CurrentTime, carry that error; values already stamped keep their stamps."""

    kind: Literal["opcua_clock_offset"]
    offset_s: float = Field(default=3600.0, allow_inf_nan=False)


FaultSpec = Annotated[
    PumpTrip
    | FailToStart
    | PumpWear
    | SensorStuck
    | SensorDrift
    | SensorSpike
    | SensorBroken
    | Burst
    | IncipientLeak
    | ValveStuck
    | PrvFailedOpen
    | TreatmentOutage
    | DosingFailure
    | FireFlow
    | ExtraDemand
    | ModbusNoAnswer
    | ModbusExceptionFault
    | ModbusSlow
    | ModbusDrop
    | ModbusDisconnect
    | PlcRestart
    | OpcUaBadStatus
    | OpcUaRestart
    | OpcUaDisconnect
    | OpcUaClockOffset,
    Field(discriminator="kind"),
]

_ADAPTER: TypeAdapter[FaultSpec] = TypeAdapter(FaultSpec)

MODBUS_KINDS = frozenset({"modbus_no_answer", "modbus_exception", "modbus_slow", "modbus_drop", "modbus_disconnect"})
OPCUA_KINDS = frozenset({"opcua_bad_status", "opcua_restart", "opcua_disconnect", "opcua_clock_offset"})
SERVER_KINDS = MODBUS_KINDS | OPCUA_KINDS | {"plc_restart"}
ONE_SHOT_KINDS = frozenset({"modbus_disconnect", "opcua_disconnect"})


def parse_fault(data: Any) -> FaultSpec:
    """A fault spec from a dict (scenario file, control port) or an existing spec; raises ``ValidationError``."""
    if isinstance(data, StrictModel):
        return _ADAPTER.validate_python(data.model_dump())
    return _ADAPTER.validate_python(data)


def fault_kinds() -> list[str]:
    """Every fault ``kind`` the simulators know."""
    union = get_args(FaultSpec)[0]
    return sorted(get_args(t.model_fields["kind"].annotation)[0] for t in get_args(union))
