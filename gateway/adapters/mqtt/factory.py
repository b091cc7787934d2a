"""Build the uplink from the gateway's settings (called by the composition root)."""

from __future__ import annotations

from gateway.adapters.mqtt.encoding import dictionary_of
from gateway.adapters.mqtt.health import HealthSource
from gateway.adapters.mqtt.publisher import UplinkOutbox
from gateway.adapters.mqtt.uplink import EventSink, Uplink, UplinkIdentity
from gateway.config.root import GatewaySettings
from gateway.domain.ports import Clock, RemoteIntake


def build_uplink(
    settings: GatewaySettings,
    *,
    outbox: UplinkOutbox,
    intake: RemoteIntake,
    clock: Clock,
    config_hash: str,
    health: HealthSource | None = None,
    events: EventSink | None = None,
) -> Uplink:
    """The uplink for ``settings``; ``intake`` is where the requests on the command topic go (the service layer's
    ``gateway.mapek.intake``), ``health`` what is wrong with the gateway now (reported on the state topic),
    ``events`` where the uplink's events go."""
    identity = UplinkIdentity(
        site=settings.gateway.site,
        gateway=settings.gateway.gateway_id,
        client_id=settings.client_id(),
        config_hash=config_hash,
    )
    compact = settings.mqtt.telemetry_format == "compact"
    return Uplink(
        dictionary=dictionary_of(settings.all_tags().values()) if compact else None,
        settings=settings.mqtt,
        identity=identity,
        outbox=outbox,
        intake=intake,
        clock=clock,
        health=health,
        events=events,
    )
