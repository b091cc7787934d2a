"""MQTT uplink (paho-mqtt): store-and-forward from the knowledge store's outbox, and remote-command intake.

See docs/uplink.md for topics, payloads, delivery semantics and the command format.
"""

from gateway.adapters.mqtt.factory import build_uplink, request_policy
from gateway.adapters.mqtt.publisher import UplinkOutbox
from gateway.adapters.mqtt.uplink import Uplink, UplinkIdentity

__all__ = ["Uplink", "UplinkIdentity", "UplinkOutbox", "build_uplink", "request_policy"]
