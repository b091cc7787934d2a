"""Execute: pass each plan's commands through the safety envelope, write the allowed ones, confirm by read-back.

A refused command is recorded as BLOCKED with the rule and counted; it is never written. An allowed command is
written through the device that owns its tag, within ``command_timeout_s``; the driver confirms it by read-back
(CONFIRMED) or not (FAILED). A start that is confirmed arms the failure-to-start check (the pump must report running
within ``fail_to_start_s``). The heartbeat has its own method so the loop can write it alongside slow commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import NamedTuple

from gateway.domain.envelope import PlantView, SafetyEnvelope
from gateway.domain.errors import DeviceRejected, DeviceUnavailable, GatewayError
from gateway.domain.explain import WriteFailure, blocked_detail, failed_detail
from gateway.domain.model import Command, CommandKind, CommandOutcome, CommandStatus, Plan, Value
from gateway.domain.ports import Clock, FieldDevice, WriteResult
from gateway.logging import get_logger
from gateway.mapek.knowledge import Knowledge
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
        knowledge: Knowledge,
        timeout_s: float,
    ) -> None:
        self._devices = devices
        self._device_of = device_of
        self._clock = clock
        self._envelope = envelope
        self._k = knowledge
        self._timeout_s = timeout_s
        self.heartbeat_failures = 0

    async def execute(self, plan: Plan, view: PlantView) -> tuple[CommandOutcome, ...]:
        """Judge the plan's commands as a batch, then write the allowed ones in order."""
        now = self._clock.now()
        outcomes = []
        for command, verdict in self._envelope.judge_all(plan.commands, view, now):
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
            self._envelope.committed(command, view, now)
            outcome = await self.write(command)
            self._follow_up(command, outcome)
            outcomes.append(outcome)
        return tuple(outcomes)

    def _follow_up(self, command: Command, outcome: CommandOutcome) -> None:
        if command.kind is CommandKind.START_PUMP and outcome.status is CommandStatus.CONFIRMED:
            self._k.expected_running[command.target] = outcome.finished_at
            self._k.expected_stopped.pop(command.target, None)
        elif command.kind is CommandKind.STOP_PUMP and outcome.status is CommandStatus.CONFIRMED:
            self._k.expected_running.pop(command.target, None)
            self._k.expected_stopped[command.target] = outcome.finished_at

    async def write(self, command: Command) -> CommandOutcome:
        """One write with its deadline; never raises for a device fault (the outcome says FAILED)."""
        started = self._clock.now()
        COMMANDS.labels(status="sent").inc()
        result = await self._write(command.tag, command.value)
        finished = self._clock.now()
        if isinstance(result, _Failed):
            status, read_back = CommandStatus.FAILED, None
            detail = failed_detail(command, result.cause, result.detail)
        else:
            status = CommandStatus.CONFIRMED if result.confirmed else CommandStatus.FAILED
            detail, read_back = result.detail, result.read_back
            if not result.confirmed:
                detail = failed_detail(command, WriteFailure.NOT_CONFIRMED, result.detail)
        COMMANDS.labels(status=status.value).inc()
        if status is CommandStatus.FAILED:
            log.warning("execute.failed", tag=command.tag, value=command.value, detail=detail)
        return CommandOutcome(command, status, started, finished, detail, read_back)

    async def heartbeat(self, tag: str, value: int) -> bool:
        """Write the gateway heartbeat; failures are counted, not raised (the PLC times out on its own)."""
        result = await self._write(tag, value)
        ok = not isinstance(result, _Failed) and result.confirmed
        if not ok:
            self.heartbeat_failures += 1
        return ok

    async def _write(self, tag: str, value: Value) -> WriteResult | _Failed:
        name = self._device_of(tag)
        device = self._devices.get(name) if name is not None else None
        if device is None:
            return _Failed(WriteFailure.NO_DEVICE, f"no device serves {tag}")
        try:
            async with asyncio.timeout(self._timeout_s):
                return await device.write(tag, value)
        except TimeoutError:
            return _Failed(WriteFailure.TIMEOUT, f"no confirmation within {self._timeout_s} s")
        except GatewayError as exc:
            return _Failed(_cause(exc), f"{type(exc).__name__}: {exc}")


class _Failed(NamedTuple):
    """A write that raised or found no device: the cause for the operator, the detail for the engineer."""

    cause: WriteFailure
    detail: str


def _cause(exc: GatewayError) -> WriteFailure:
    if isinstance(exc, DeviceUnavailable):
        return WriteFailure.DEVICE_UNAVAILABLE
    if isinstance(exc, DeviceRejected):
        return WriteFailure.DEVICE_REJECTED
    return WriteFailure.WRITE_ERROR
