"""The remote-request intake as the composition root builds it (the service with the MQTT adapter's JSON answers),
for tests and benches that build an uplink or an intake of their own."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.adapters.mqtt.responses import JsonCommandResponses
from gateway.config.mqtt import CommandSettings
from gateway.domain.ports import Clock, RemoteRequestHandler, RemoteRequestLog
from gateway.mapek.intake import CommandIntake, request_policy


def command_intake(
    commands: CommandSettings,
    *,
    store: RemoteRequestLog,
    handler: RemoteRequestHandler | None,
    clock: Clock,
    pumps: Sequence[str] = (),
) -> CommandIntake:
    """An intake under the ``[mqtt.commands]`` rules for ``pumps``; ``handler`` None refuses every request."""
    return CommandIntake(
        log_store=store,
        handler=handler,
        responses=JsonCommandResponses(),
        policy=request_policy(commands, pumps=list(pumps)),
        clock=clock,
        handler_timeout_s=commands.handler_timeout_s,
    )
