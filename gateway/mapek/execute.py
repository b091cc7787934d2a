"""Execute: pass each plan's commands through the safety envelope, write the allowed ones, confirm by read-back.

A refused command is recorded as BLOCKED with the rule and counted; it is never written. An allowed command is
written through the device that owns its tag, within ``command_timeout_s``; the driver confirms it by read-back
(CONFIRMED) or not (FAILED, with a ``WriteFailure`` code). The outcomes are returned, not applied: the knowledge takes
them (``Knowledge.apply_outcomes``: a confirmed start arms the failure-to-start check). The heartbeat has its own
method so the loop can write it alongside slow commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from gateway.domain.envelope import SafetyEnvelope
from gateway.domain.errors import DeviceRejected, DeviceUnavailable, GatewayError
from gateway.domain.explain import blocked_detail, failed_detail
from gateway.domain.model import Command, CommandOutcome, CommandStatus, Plan, PlanCode, Value, WriteFailure
from gateway.domain.ports import Clock, FieldDevice, WriteResult
from gateway.domain.snapshot import PlantSnapshot
from gateway.logging import get_logger
from gateway.metrics import COMMANDS, INTERLOCK_BLOCKS

log = get_logger("gateway.mapek.execute")


class Executor:
    """Writes commands the envelope allows; one method per kind of write."""

    def __init__(
        self,
        *,
        devices: Mapping[str, FieldDevice],
        device_of: Callable[[str], str | None],
        clock: Clock,
        envelope: SafetyEnvelope,
        timeout_s: float,
    ) -> None:
        self._devices = devices
        self._device_of = device_of
        self._clock = clock
        self._envelope = envelope
        self._timeout_s = timeout_s
        self.heartbeat_failures = 0

    async def execute(self, plan: Plan, view: PlantSnapshot) -> tuple[CommandOutcome, ...]:
        """Judge the plan's commands as a batch, then write the allowed ones in order."""
        now = self._clock.now()
        outcomes = []
        operator = plan.code is PlanCode.REMOTE_REQUEST
        for command, verdict in self._envelope.judge_all(plan.commands, view, now, operator=operator):
            if not verdict.allowed:
                rule = verdict.rule.value if verdict.rule is not None else "unknown"
                INTERLOCK_BLOCKS.labels(rule=rule).inc()
                COMMANDS.labels(status=CommandStatus.BLOCKED.value).inc()
                detail = (
                    verdict.detail if verdict.rule is None else blocked_detail(command, verdict.rule, verdict.detail)
                )
                outcomes.append(CommandOutcome(command, CommandStatus.BLOCKED, now, now, detail))
                log.info("execute.blocked", command=command.kind.value, target=command.target, rule=rule)
                continue
            self._envelope.committed(command, view, now, operator=operator)
            outcomes.append(await self.write(command))
        return tuple(outcomes)

    async def write(self, command: Command) -> CommandOutcome:
        """One write with its deadline; never raises for a device fault (the outcome says FAILED)."""
        started = self._clock.now()
        COMMANDS.labels(status="sent").inc()
        result = await self._write(command.tag, command.value)
        finished = self._clock.now()
        if result.confirmed:
            COMMANDS.labels(status=CommandStatus.CONFIRMED.value).inc()
            return CommandOutcome(command, CommandStatus.CONFIRMED, started, finished, result.detail, result.read_back)
        failure = result.failure or WriteFailure.NOT_CONFIRMED
        detail = failed_detail(command, failure, result.detail)
        COMMANDS.labels(status=CommandStatus.FAILED.value).inc()
        log.warning("execute.failed", tag=command.tag, value=command.value, failure=failure.value, detail=detail)
        return CommandOutcome(
            command, CommandStatus.FAILED, started, finished, detail, result.read_back, failure=failure
        )

    async def heartbeat(self, tag: str, value: int) -> bool:
        """Write the gateway heartbeat; failures are counted, not raised (the PLC times out on its own)."""
        result = await self._write(tag, value)
        if not result.confirmed:
            self.heartbeat_failures += 1
        return result.confirmed

    async def _write(self, tag: str, value: Value) -> WriteResult:
        """The device's result; a write that raised or found no device is an unconfirmed result with its cause."""
        name = self._device_of(tag)
        device = self._devices.get(name) if name is not None else None
        if device is None:
            return _failed(tag, value, WriteFailure.NO_DEVICE, f"no device serves {tag}")
        try:
            async with asyncio.timeout(self._timeout_s):
                return await device.write(tag, value)
        except TimeoutError:
            return _failed(tag, value, WriteFailure.TIMEOUT, f"no confirmation within {self._timeout_s} s")
        except GatewayError as exc:
            return _failed(tag, value, _cause(exc), f"{type(exc).__name__}: {exc}")


def _failed(tag: str, value: Value, failure: WriteFailure, detail: str) -> WriteResult:
    return WriteResult(tag, value, confirmed=False, read_back=None, detail=detail, failure=failure)


def _cause(exc: GatewayError) -> WriteFailure:
    if isinstance(exc, DeviceUnavailable):
        return WriteFailure.DEVICE_UNAVAILABLE
    if isinstance(exc, DeviceRejected):
        return WriteFailure.DEVICE_REJECTED
    return WriteFailure.WRITE_ERROR
