"""A reference decoder for what the gateway publishes: plain or zlib payloads, JSON or compact telemetry.

Standard library only, so that a consumer can copy this file. Usage::

    decoder = Decoder()
    # on …/tags/{version} (subscribe to …/tags/+; retained): decoder.add_dictionary(payload)
    # on any other topic but …/state:
    message = decoder.decode(payload)  # the envelope as a dict, telemetry in the JSON form (kind "readings")

``decode`` raises ``UnknownDictionary`` for a compact message whose dictionary has not arrived yet (MQTT orders
messages per topic only): keep the message and decode it again once ``add_dictionary`` has seen that version.

How a payload is told apart (docs/uplink.md, "Compact telemetry and compression"): its first byte is ``{`` for JSON,
``0x78`` for a zlib stream (RFC 1950) of the same JSON; with MQTT 5 a zlib one also carries the user property
``encoding`` = ``zlib``.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

#: A decompressed payload larger than this is refused (a zlib bomb); the gateway's bodies are far smaller.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


class DecodeError(ValueError):
    """The payload is neither a JSON object nor a zlib stream of one, or a compact body is malformed."""


class UnknownDictionary(DecodeError):
    """A compact message names a tag dictionary the decoder has not seen (yet)."""

    def __init__(self, version: str) -> None:
        super().__init__(f"tag dictionary {version} not received yet (subscribe to …/tags/+)")
        self.version = version


def payload_json(payload: bytes) -> dict[str, Any]:
    """The JSON object of a payload, decompressed when it is a zlib stream."""
    if payload[:1] == b"\x78":
        inflater = zlib.decompressobj()
        payload = inflater.decompress(payload, MAX_PAYLOAD_BYTES)
        if inflater.unconsumed_tail:
            raise DecodeError(f"payload inflates beyond {MAX_PAYLOAD_BYTES} bytes")
    elif payload[:1] != b"{":
        raise DecodeError(f"not a JSON object nor a zlib stream (first byte {payload[:1]!r})")
    doc = json.loads(payload)
    if not isinstance(doc, dict):
        raise DecodeError("not a JSON object")
    return doc


class Decoder:
    """Holds the tag dictionaries seen, by version, and turns messages back into the JSON form."""

    def __init__(self) -> None:
        self.dictionaries: dict[str, dict[str, Any]] = {}

    def add_dictionary(self, payload: bytes) -> str:
        """Keep a ``…/tags/{version}`` message; returns its version."""
        doc = payload_json(payload)
        self.dictionaries[doc["version"]] = doc
        return str(doc["version"])

    def decode(self, payload: bytes) -> dict[str, Any]:
        """The envelope of a message; a compact telemetry message comes back as kind ``readings`` with its data in
        the JSON form (``readings.schema.json``), exactly as the gateway would have sent it with the JSON format."""
        message = payload_json(payload)
        if message.get("kind") == "readings_compact":
            data = message["data"]
            dictionary = self.dictionaries.get(data["tags"])
            if dictionary is None:
                raise UnknownDictionary(data["tags"])
            message = {**message, "kind": "readings", "data": expand(data, dictionary)}
        return message


def expand(data: dict[str, Any], dictionary: dict[str, Any]) -> dict[str, Any]:
    """A compact body in the JSON form: ``{"device", "readings": [{"tag", "value", "unit", "quality", "ts",
    "reason"?}]}``."""
    tags, qualities, reasons = dictionary["tags"], dictionary["qualities"], dictionary["reasons"]
    ts = data["t0"]
    readings = []
    for row in data["r"]:
        ts += row[1]
        if isinstance(row[0], str):
            tag, unit = row[0], row[5]
        else:
            tag, unit = tags[row[0]][0], tags[row[0]][1]
        quality = _code(row, 3, qualities)
        reading = {"tag": tag, "value": row[2], "unit": unit, "quality": quality or qualities[0], "ts": ts}
        reason = _code(row, 4, reasons)
        if reason:
            reading["reason"] = reason
        readings.append(reading)
    return {"device": data["device"], "readings": readings}


def _code(row: list[Any], index: int, table: list[str]) -> str:
    """The text of a code (an index into ``table``, or the text itself); "" when the row has no such column."""
    if len(row) <= index:
        return ""
    code = row[index]
    return code if isinstance(code, str) else str(table[code])
