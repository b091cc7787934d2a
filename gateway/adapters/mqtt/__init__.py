"""MQTT uplink (paho-mqtt): store-and-forward from the knowledge store's outbox; remote requests received on the
command topic go to the intake (``gateway.mapek.intake``), answered in this package's JSON (``responses.py``).

See docs/uplink.md for topics, payloads, delivery semantics and the command format.
"""

from gateway.adapters.mqtt.factory import build_uplink
from gateway.adapters.mqtt.publisher import UplinkOutbox
from gateway.adapters.mqtt.responses import JsonCommandResponses
from gateway.adapters.mqtt.uplink import Uplink, UplinkIdentity

__all__ = ["JsonCommandResponses", "Uplink", "UplinkIdentity", "UplinkOutbox", "build_uplink"]
