"""OPC UA status codes → the gateway's quality and reason.

The severity bits decide the quality (Good, Uncertain, Bad); the code decides the reason. Codes that mean the value
never reached the server (a field bus down, a server that lost its device) are ``comm_loss`` — the same as a device
that does not answer at all; a sensor the server knows to be broken is ``sensor_fault``; every other Bad code is the
device saying no: ``device_exception``.
"""

from __future__ import annotations

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from gateway.domain.model import Quality, QualityReason

_S = StatusCodes

COMM_LOSS_CODES = frozenset(
    {
        _S.BadCommunicationError,
        _S.BadConnectionClosed,
        _S.BadNoCommunication,
        _S.BadNotConnected,
        _S.BadRequestTimeout,
        _S.BadSecureChannelClosed,
        _S.BadServerHalted,
        _S.BadServerNotConnected,
        _S.BadSessionClosed,
        _S.BadShutdown,
        _S.BadTimeout,
        _S.BadWaitingForInitialData,
        _S.BadWaitingForResponse,
    }
)
SENSOR_FAULT_CODES = frozenset({_S.BadSensorFailure, _S.BadOutOfService, _S.UncertainSensorNotAccurate})
_UNCERTAIN_REASONS = {
    _S.UncertainLastUsableValue: QualityReason.LAST_USABLE,
    _S.UncertainNoCommunicationLastUsableValue: QualityReason.LAST_USABLE,
    _S.UncertainSubstituteValue: QualityReason.SUBSTITUTED,
    _S.UncertainEngineeringUnitsExceeded: QualityReason.OUT_OF_RANGE,
    _S.UncertainSensorNotAccurate: QualityReason.SENSOR_FAULT,
    _S.UncertainSensorCalibration: QualityReason.SENSOR_FAULT,
}
_SEVERITY_MASK = 0xC0000000
_GOOD, _UNCERTAIN = 0x00000000, 0x40000000


def status_quality(code: int) -> tuple[Quality, QualityReason]:
    """Quality and reason of a status code's value (the low 16 bits, the info bits, do not matter)."""
    code &= 0xFFFF0000
    severity = code & _SEVERITY_MASK
    if severity == _GOOD:
        return Quality.GOOD, QualityReason.NONE
    if severity == _UNCERTAIN:
        return Quality.UNCERTAIN, _UNCERTAIN_REASONS.get(code, QualityReason.DEVICE_EXCEPTION)
    if code in COMM_LOSS_CODES:
        return Quality.BAD, QualityReason.COMM_LOSS
    if code in SENSOR_FAULT_CODES:
        return Quality.BAD, QualityReason.SENSOR_FAULT
    return Quality.BAD, QualityReason.DEVICE_EXCEPTION


def status_name(code: int) -> str:
    """``BadNodeIdUnknown`` rather than ``0x80340000``, where the code is known."""
    try:
        return ua.StatusCode(ua.UInt32(code)).name
    except (KeyError, ValueError):  # an unknown code, from a newer or vendor-specific server
        return f"0x{code:08X}"
