"""Build the uplink from the gateway's settings (called by the composition root)."""

from __future__ import annotations

from gateway.adapters.mqtt.health import HealthSource
from gateway.adapters.mqtt.publisher import UplinkOutbox
from gateway.adapters.mqtt.uplink import EventSink, Uplink, UplinkIdentity
from gateway.config.mqtt import CommandSettings
from gateway.config.root import GatewaySettings
from gateway.domain.ports import Clock, RemoteRequestHandler, RemoteRequestLog
from gateway.domain.remote import RemoteRequestKind, RequestPolicy, SetpointLimit


def request_policy(commands: CommandSettings, *, pumps: list[str]) -> RequestPolicy:
    """The intake's rules from the ``[mqtt.commands]`` settings and the loop's pump names."""
    allowed = frozenset(RemoteRequestKind(kind) for kind in commands.allow) if commands.enabled else frozenset()
    setpoints = {
        sp.name: SetpointLimit(sp.name, sp.tag, sp.min, sp.max, sp.max_step, sp.unit) for sp in commands.setpoints
    }
    return RequestPolicy(
        allowed=allowed,
        setpoints=setpoints,
        pumps=tuple(pumps),
        max_age_s=commands.max_age_s,
        max_clock_skew_s=commands.max_clock_skew_s,
        max_bytes=commands.max_request_bytes,
        max_depth=commands.max_request_depth,
        max_number=commands.max_number,
        max_string_chars=commands.max_string_chars,
    )


def build_uplink(
    settings: GatewaySettings,
    *,
    outbox: UplinkOutbox,
    request_log: RemoteRequestLog,
    handler: RemoteRequestHandler | None,
    clock: Clock,
    config_hash: str,
    health: HealthSource | None = None,
    events: EventSink | None = None,
) -> Uplink:
    """The uplink for ``settings``; ``handler`` is the control loop (None refuses every remote request); ``health``
    what is wrong with the gateway now (reported on the state topic), ``events`` where the uplink's events go."""
    identity = UplinkIdentity(
        site=settings.gateway.site,
        gateway=settings.gateway.gateway_id,
        client_id=settings.client_id(),
        config_hash=config_hash,
    )
    pumps = [p.name for p in settings.loop.pumps] if settings.loop.enabled else []
    return Uplink(
        settings=settings.mqtt,
        identity=identity,
        outbox=outbox,
        request_log=request_log,
        handler=handler if settings.loop.enabled else None,
        policy=request_policy(settings.mqtt.commands, pumps=pumps),
        clock=clock,
        health=health,
        events=events,
    )
